"""Training curves from `metrics.jsonl`: loss and gradient norm against the step, in two panels."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bfn.errors import DataError

#: the unit of each logged metric (the trainer logs the loss per example and per dimension, in nats)
UNITS = {"loss": "nats/example", "loss_per_dim": "nats/dim", "grad_norm": "L2 norm, before clipping",
         "lr": "learning rate", "images_per_s": "examples/s"}


def load_records(source: str | Path | Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Metric records from a list, a metrics.jsonl file or a run directory holding one."""
    if not isinstance(source, (str, Path)):
        return list(source)
    from bfn.utils.io import read_metrics

    path = Path(source)
    if path.is_dir():
        path = path / "metrics.jsonl"
    if not path.is_file():
        raise DataError(f"{path} not found; give a run directory written by `bfn train` (it logs metrics.jsonl)")
    return read_metrics(path)


def series(records: Sequence[dict[str, Any]], key: str) -> tuple[list[float], list[float]]:
    """(steps, values) of the finite values logged under `key`, in step order."""
    pairs = sorted((float(r.get("step", j)), float(r[key])) for j, r in enumerate(records)
                   if isinstance(r.get(key), (int, float)) and math.isfinite(r[key]))
    return [p[0] for p in pairs], [p[1] for p in pairs]


def smoothed(values: Sequence[float], *, weight: float) -> list[float]:
    """Exponential moving average with bias correction (TensorBoard-style smoothing)."""
    out, avg = [], 0.0
    for j, v in enumerate(values, start=1):
        avg = weight * avg + (1 - weight) * v
        out.append(avg / (1 - weight**j))
    return out


def auto_smoothing(count: int) -> float:
    """EMA weight averaging over about count / 30 points (none for fewer than 60 points)."""
    return 0.0 if count < 60 else 1 - 30 / count


def _panel(ax: Any, steps: list[float], values: list[float], *, name: str, unit: str, log: bool,
           smooth: float | None) -> None:
    if not values:
        ax.text(0.5, 0.5, f"no {name} logged", ha="center", va="center", transform=ax.transAxes)
        ax.set_title(name)
        return
    weight = auto_smoothing(len(values)) if smooth is None else smooth
    ax.plot(steps, values, color="C0", lw=0.8, alpha=0.35 if weight > 0 else 1.0, label=name)
    if weight > 0:
        ax.plot(steps, smoothed(values, weight=weight), color="C0", lw=1.5, label=f"{name} (smoothed)")
    if log and min(values) > 0:
        ax.set_yscale("log")
    ax.set_xlabel("training step")
    ax.set_ylabel(f"{name} ({unit})")
    ax.set_title(name)
    ax.legend(loc="upper right", fontsize="small")
    ax.grid(alpha=0.3)


def save_training_curves(source: str | Path | Sequence[dict[str, Any]], path: str | Path, *, log_loss: bool = True,
                         smooth: float | None = None, loss_key: str = "loss") -> Path:
    """Write loss (log scale when `log_loss` and positive) and gradient-norm curves of a run, side by side; `source`
    is a run directory, a metrics.jsonl file or a list of records. `smooth` in [0, 1) overlays an EMA of that
    weight (None: chosen from the number of points; 0: raw values only)."""
    from bfn.viz.plots import new_figure, save_figure

    records = load_records(source)
    loss_steps, loss = series(records, loss_key)
    if not loss:
        raise DataError(f"no '{loss_key}' values in the metrics; train a few log intervals (train.log_every) first")
    grad_steps, grad = series(records, "grad_norm")
    fig = new_figure(10, 3.5)
    left, right = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    _panel(left, loss_steps, loss, name=loss_key, unit=UNITS.get(loss_key, "nats/example"), log=log_loss,
           smooth=smooth)
    _panel(right, grad_steps, grad, name="gradient norm", unit=UNITS["grad_norm"], log=True, smooth=smooth)
    fig.tight_layout()
    return save_figure(fig, path)
