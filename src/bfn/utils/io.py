"""File I/O shared by every layer: atomic writes (temp file + fsync + rename) and reading metrics files."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any


def _file_mode() -> int:
    """Permissions of a new file under this process's umask (mkstemp alone would leave them at 0600)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


FILE_MODE = _file_mode()


def atomic_write(path: str | os.PathLike[str], write: Callable[[str], Any]) -> None:
    """Write `path` through `write(tmp_path)` into a temp file in the same folder, fsync, then rename: never a
    half-written file. A kill leaves at worst a stray `.<name>.*.tmp` file, which `bfn train` removes on resume."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
        fsync_dir(path.parent)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def fsync_dir(folder: Path) -> None:
    """Make a rename durable across a power cut (POSIX); a no-op where folders cannot be opened (Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Replace the text file `path` atomically (see `atomic_write`)."""
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def read_metrics(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """All well-formed records of a metrics.jsonl file (a line cut by a kill is skipped)."""
    out = []
    for line in Path(path).read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out
