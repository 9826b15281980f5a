"""Run directories: exported EMA weights (safetensors) and a resume state written atomically, loaded safely.

Layout of a run directory:
    config.yaml          the fully resolved run config
    config.json          model description (for from_pretrained)
    model.safetensors    EMA weights
    state.pt             resume state: weights, EMA, optimizer, scheduler, step, RNG (tensors only)
    metrics.jsonl        one JSON object per log step
    samples/             periodic sample grids
"""

from __future__ import annotations

import io
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from bfn.errors import CheckpointError
from bfn.models.hub import _atomic_write

STATE_NAME = "state.pt"


def save_state(run_dir: Path, state: dict[str, Any]) -> None:
    """torch.save to a temp file, fsync, rename: a kill at any moment leaves the previous state intact."""
    _atomic_write(Path(run_dir) / STATE_NAME, lambda tmp: torch.save(state, tmp))


def load_state(run_dir: Path) -> dict[str, Any]:
    """Load a resume state with `weights_only=True`: a file holding anything but tensors and plain containers
    (e.g. a planted pickle payload) is refused."""
    path = Path(run_dir) / STATE_NAME
    if not path.is_file():
        raise CheckpointError(f"no resume state at {path}; start without --resume, or point to the run directory")
    data = path.read_bytes()
    if not zipfile.is_zipfile(io.BytesIO(data)):  # torch.save writes a zip archive; anything else is damage
        raise CheckpointError(f"{path} is truncated or corrupt (not a torch archive); delete it to restart the run "
                              "from scratch")
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else "unpickling refused"
        raise CheckpointError(f"{path} holds objects that are not plain tensors ({first[:120]}); refusing to load "
                              "it, since only files written by `bfn train` are trusted") from None
    except (RuntimeError, EOFError, ValueError, OSError) as err:
        raise CheckpointError(f"{path} is truncated or corrupt ({str(err).strip().splitlines()[0][:120]}); "
                              "delete it to restart the run from scratch") from None
    if not isinstance(state, dict) or "step" not in state:
        raise CheckpointError(f"{path} is not a bfn resume state; delete it to restart the run")
    return state
