"""CIFAR-10 from its binary version (never the pickled one): readers of the .bin batches and the download."""

from __future__ import annotations

import os
import tarfile
from pathlib import Path

import numpy as np

from bfn.data.common import data_dir
from bfn.data.download import RemoteFile, ensure
from bfn.errors import DataError

ARCHIVE = RemoteFile("cifar-10-binary.tar.gz", ("https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz",),
                     md5="c32a1d4ab5d03f1284b67883e8d87530")
SUBDIR = "cifar-10-batches-bin"
BATCHES = {"train": [f"data_batch_{i}.bin" for i in range(1, 6)], "test": ["test_batch.bin"]}
RECORD = 1 + 3 * 32 * 32  # one label byte, then 1024 red, 1024 green, 1024 blue bytes (row-major 32x32)


def read_cifar_bin(path: str | os.PathLike[str]) -> tuple[np.ndarray, np.ndarray]:
    """One binary batch: uint8 images [N, 3, 32, 32] and labels [N]."""
    raw = np.fromfile(path, dtype=np.uint8)
    if raw.size == 0 or raw.size % RECORD:
        raise DataError(f"{path} has {raw.size} bytes, not a whole number of {RECORD}-byte CIFAR-10 records; "
                        "delete it and download the archive again")
    records = raw.reshape(-1, RECORD)
    labels = records[:, 0].copy()
    if labels.max() > 9:
        raise DataError(f"{path} has a label byte {labels.max()} > 9; it is not a CIFAR-10 binary batch")
    return records[:, 1:].reshape(-1, 3, 32, 32), labels


def _batches_folder(folder: Path) -> Path:
    return folder / SUBDIR


def cifar10_present(folder: Path | None = None) -> bool:
    folder = folder or data_dir("cifar10")
    return all((_batches_folder(folder) / name).exists() for names in BATCHES.values() for name in names)


def extract(archive: Path, dest: Path) -> None:
    """Unpack only the six .bin batches (by name, never paths from the archive) into `dest`."""
    wanted = {name for names in BATCHES.values() for name in names}
    dest.mkdir(parents=True, exist_ok=True)
    try:
        with tarfile.open(archive, "r:gz") as tar:
            for member in tar:
                name = Path(member.name).name
                if member.isfile() and name in wanted:
                    src = tar.extractfile(member)
                    tmp = dest / f".{name}.part"
                    assert src is not None
                    with src, open(tmp, "wb") as out:
                        out.write(src.read())
                    os.replace(tmp, dest / name)
    except (tarfile.TarError, OSError, EOFError) as err:
        raise DataError(f"cannot unpack {archive} ({err}); delete it and download it again") from None


def cifar10(split: str, root: str | None = None,
            download: bool | None = None) -> tuple[np.ndarray, np.ndarray]:
    """CIFAR-10 (50,000 train / 10,000 test) from `<root>/cifar10/cifar-10-batches-bin/*.bin`.

    Missing batches are unpacked from `<root>/cifar10/cifar-10-binary.tar.gz`, which is downloaded first when
    it is missing too (unless download=False).
    """
    folder = data_dir("cifar10", root)
    paths = [_batches_folder(folder) / name for name in BATCHES[split]]
    if download or not all(p.exists() for p in paths):
        ensure([ARCHIVE], folder, download=download, what="CIFAR-10",
               hint=f", or its unpacked .bin batches in {_batches_folder(folder)}")
        extract(folder / ARCHIVE.name, _batches_folder(folder))
    missing = [p.name for p in paths if not p.exists()]
    if missing:
        raise DataError(f"{folder / ARCHIVE.name} lacks {', '.join(missing)}; it is not the CIFAR-10 binary "
                        "version, delete it and download it again")
    parts = [read_cifar_bin(p) for p in paths]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
