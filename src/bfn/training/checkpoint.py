"""Run directories: exported EMA weights (safetensors) and a resume state written atomically, loaded safely.

Layout of a run directory:
    config.yaml          the fully resolved run config
    config.json          model description (for from_pretrained)
    model.safetensors    EMA weights
    state.pt             resume state: weights, EMA, optimizer, scheduler, step, RNG (tensors only)
    metrics.jsonl        one JSON object per log step
    samples/             periodic sample grids
    .train.lock          held while a process trains into the folder (one trainer per folder)

Every file is replaced atomically (temp file, fsync, rename), so a kill at any moment leaves each file either at
its previous or at its new version. `state.pt` is written last: it is the commit point of a checkpoint, and a
resumed run restarts from it.
"""

from __future__ import annotations

import contextlib
import io
import pickle
import re
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from bfn.errors import CheckpointError, first_line
from bfn.utils.io import atomic_write

STATE_NAME = "state.pt"
#: entries every resume state has, and their types
STATE_KEYS: dict[str, type] = {"step": int, "model": dict, "ema": dict, "optimizer": dict, "scheduler": dict,
                               "rng_cpu": torch.Tensor}


#: names of the temp files `_atomic_write` creates (`.<name>.<8 random characters>.tmp`)
TEMP_FILE = re.compile(r"^\..+\.[A-Za-z0-9_]{8}\.tmp$")


def remove_stale_temps(run_dir: Path) -> int:
    """Delete the temp files that writers killed mid-write left in `run_dir`; returns how many there were."""
    stale = [p for p in Path(run_dir).glob(".*.tmp") if TEMP_FILE.match(p.name) and p.is_file()]
    for p in stale:
        p.unlink(missing_ok=True)
    return len(stale)


#: lock file held by the process that trains into a run directory (an OS lock: a killed process drops it)
LOCK_NAME = ".train.lock"


@contextlib.contextmanager
def lock_run_dir(run_dir: Path) -> Iterator[None]:
    """Hold `run_dir`/.train.lock while training into it, so that a second `bfn train ... --resume` on the same
    folder stops with a one-line error instead of interleaving checkpoints with the first."""
    from filelock import FileLock, Timeout

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    lock = FileLock(run_dir / LOCK_NAME)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise CheckpointError(f"another `bfn train` is writing {run_dir} (it holds {run_dir / LOCK_NAME}); wait "
                              "for it to finish or stop it, or choose another --out directory") from None
    try:
        yield
    finally:
        lock.release()


def save_state(run_dir: Path, state: dict[str, Any]) -> None:
    """torch.save to a temp file, fsync, rename: a kill at any moment leaves the previous state intact."""
    atomic_write(Path(run_dir) / STATE_NAME, lambda tmp: torch.save(state, tmp))


def load_state(run_dir: Path) -> dict[str, Any]:
    """Load a resume state with `weights_only=True`: a file holding anything but tensors and plain containers
    (e.g. a planted pickle payload) is refused. The zip archive's CRC-32 checksums are verified first, so a
    truncated or bit-flipped file is a CheckpointError, never a state with silently damaged tensors."""
    path = Path(run_dir) / STATE_NAME
    if not path.is_file():
        raise CheckpointError(f"no resume state at {path}; start without --resume, or point to the run directory")
    corrupt = f"{path} is truncated or corrupt ({{}}); delete it to restart the run from scratch"
    data = path.read_bytes()
    try:  # torch.save writes a zip archive; anything else, or a member failing its CRC, is damage
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            bad = archive.testzip()
    except Exception as err:  # any failure to parse these untrusted bytes means damage
        raise CheckpointError(corrupt.format(f"not a valid torch archive: {first_line(err, 120)}")) from None
    if bad is not None:
        raise CheckpointError(corrupt.format(f"checksum mismatch in {bad.split('/')[-1]}"))
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise CheckpointError(f"{path} holds objects that are not plain tensors ({first_line(err, 120)}); refusing to "
                              "load it, since only files written by `bfn train` are trusted") from None
    except Exception as err:  # the unpickler raises many types on malformed input
        raise CheckpointError(corrupt.format(first_line(err, 120))) from None
    check_state(state, path)
    return state


def check_state(state: Any, path: Path) -> None:
    """A resume state must be a dict with the entries `bfn train` writes, of the right types."""
    if not isinstance(state, dict) or "step" not in state:
        raise CheckpointError(f"{path} is not a bfn resume state; delete it to restart the run")
    for key, kind in STATE_KEYS.items():
        value = state.get(key)
        if not isinstance(value, kind) or isinstance(value, bool):
            raise CheckpointError(f"{path} is not a complete bfn resume state ({key!r} is "
                                  f"{type(value).__name__}); delete it to restart the run")
    if state["step"] < 0 or not isinstance(state.get("elapsed", 0.0), (int, float)):
        raise CheckpointError(f"{path} is not a valid bfn resume state (step {state['step']}); delete it to "
                              "restart the run")
