"""Metrics: one JSON object per line in `metrics.jsonl`, always; TensorBoard when asked and installed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bfn.errors import ConfigError
from bfn.utils.io import atomic_write_text, read_metrics

__all__ = ["MetricsLogger", "read_metrics"]


class MetricsLogger:
    """Append-only JSONL metrics (flushed each line, so a killed run keeps what it logged)."""

    def __init__(self, path: Path, *, tensorboard_dir: Path | None = None) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._tb = None
        if tensorboard_dir is not None:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ModuleNotFoundError:
                raise ConfigError("train.tensorboard=true needs TensorBoard: pip install 'bfn[tensorboard]'") from None
            self._tb = SummaryWriter(str(tensorboard_dir))

    def log(self, record: dict[str, Any]) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        if self._tb is not None:
            step = record.get("step", 0)
            for k, v in record.items():
                if isinstance(v, (int, float)) and k != "step":
                    self._tb.add_scalar(k, v, step)

    def truncate_after(self, step: int) -> None:
        """On resume, drop lines logged after the restored step (they will be logged again)."""
        if not self.path.is_file():
            return
        keep = []
        for line in self.path.read_text().splitlines():
            try:
                if json.loads(line).get("step", 0) <= step:
                    keep.append(line)
            except json.JSONDecodeError:
                continue  # a line cut by a kill
        atomic_write_text(self.path, "".join(line + "\n" for line in keep))  # a kill here keeps the old file

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
