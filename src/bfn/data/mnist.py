"""MNIST: the 5,000 digits shipped with the package, the full 60k/10k from IDX files, and their datasets."""

from __future__ import annotations

import gzip
import os
from functools import cache
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from bfn.data.common import GreyImages, data_dir
from bfn.data.download import RemoteFile, ensure
from bfn.errors import DataError

SUBSET_TRAIN = 4000  # rows 0..3999 of the embedded file are train, 4000..4999 test (see assets/README.md)
MIRRORS = ("https://ossci-datasets.s3.amazonaws.com/mnist/", "https://storage.googleapis.com/cvdf-datasets/mnist/")
FILES = {  # name -> md5 of the .gz file
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}
REMOTES = [RemoteFile(name, tuple(m + name for m in MIRRORS), md5) for name, md5 in FILES.items()]
SPLIT_PREFIX = {"train": "train", "test": "t10k"}
IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
              0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an IDX file (the MNIST format; gzip-compressed when the name ends in .gz) into a numpy array."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as err:
        raise DataError(f"cannot read IDX file {path} ({err}); delete it and download it again") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in IDX_DTYPES:
        raise DataError(f"{path} is not an IDX file (bad magic number); delete it and download it again")
    dtype, ndim = np.dtype(IDX_DTYPES[raw[2]]), raw[3]  # type: ignore[call-overload]
    shape = tuple(int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
    offset = 4 + 4 * ndim
    count = int(np.prod(shape, dtype=np.int64))
    if len(raw) != offset + count * dtype.itemsize:
        raise DataError(f"{path} holds {len(raw) - offset} data bytes, its header says {shape}; the file is "
                        "truncated or corrupt, delete it and download it again")
    return np.frombuffer(raw, dtype, count, offset).reshape(shape).astype(dtype.newbyteorder("="))


@cache
def mnist_5k() -> tuple[np.ndarray, np.ndarray]:
    """The embedded 5,000 MNIST digits: uint8 images [5000, 28, 28] and labels [5000] (assets/README.md)."""
    ref = resources.files("bfn.data") / "assets" / "mnist_5k.npz"
    with resources.as_file(ref) as path, np.load(path, allow_pickle=False) as npz:
        return npz["images"], npz["labels"]


def mnist_5k_split(split: str) -> tuple[np.ndarray, np.ndarray]:
    """The fixed split of the embedded digits: first 4,000 rows train, last 1,000 test (400/100 per digit)."""
    images, labels = mnist_5k()
    part = slice(0, SUBSET_TRAIN) if split == "train" else slice(SUBSET_TRAIN, None)
    return images[part], labels[part]


def _local(folder: Path, name: str) -> Path | None:
    """The .gz file or its unzipped form in `folder`, whichever exists."""
    for path in (folder / name, folder / name.removesuffix(".gz")):
        if path.exists():
            return path
    return None


def mnist_full_present(folder: Path | None = None) -> bool:
    folder = folder or data_dir("mnist")
    return all(_local(folder, name) is not None for name in FILES)


def mnist_full(split: str, root: str | None = None,
               download: bool | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Full MNIST (60,000 train / 10,000 test) from the IDX files in `<root>/mnist`, downloading if needed."""
    folder = data_dir("mnist", root)
    names = [f"{SPLIT_PREFIX[split]}-{kind}-idx{d}-ubyte.gz" for kind, d in (("images", 3), ("labels", 1))]
    remotes = [r for r in REMOTES if r.name in names]
    ensure(remotes, folder, download=download, what="MNIST", hint=", gzipped or not",
           found=lambda r: _local(folder, r.name) is not None)
    images, labels = (read_idx(_local(folder, name)) for name in names)  # type: ignore[arg-type]
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise DataError(f"MNIST files in {folder} disagree: images {images.shape}, labels {labels.shape}; "
                        "delete them and download them again")
    return images, labels


def mnist_dataset(images: np.ndarray, labels: np.ndarray, mode: str, *, num_bins: int = 256,
                  generator: torch.Generator | None = None) -> GreyImages:
    """Images [N, 28, 28] as a dataset of [1, 28, 28] items (see `GreyImages` for `mode`)."""
    return GreyImages(images[:, None], labels, mode, num_bins=num_bins, generator=generator)
