"""text8 (the first 10^8 characters of cleaned English Wikipedia): reader, split and download."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from bfn.data.common import NO_LABEL, Item, data_dir, label_tensor
from bfn.data.download import RemoteFile, ensure
from bfn.errors import DataError

# Zip size as published with the corpus (no official checksum exists); the content is checked on reading.
ARCHIVE = RemoteFile("text8.zip", ("http://mattmahoney.net/dc/text8.zip",), size=31_344_016)
# class k = ALPHABET[k]: space 0, a..z 1..26 (sorted, as in the official BFN code)
ALPHABET = " abcdefghijklmnopqrstuvwxyz"
# fractions of the file: 90M / 5M / 5M of the 100M characters
SPLITS = {"train": (0.0, 0.9), "valid": (0.9, 0.95), "test": (0.95, 1.0)}
_LOOKUP = np.full(256, 255, dtype=np.uint8)
_LOOKUP[np.frombuffer(ALPHABET.encode(), dtype=np.uint8)] = np.arange(len(ALPHABET), dtype=np.uint8)


def encode(text: str | bytes) -> np.ndarray:
    """Characters -> uint8 classes 0..26; DataError for anything outside a-z and space."""
    raw = np.frombuffer(text.encode() if isinstance(text, str) else text, dtype=np.uint8)
    ids = _LOOKUP[raw]
    if (bad := np.flatnonzero(ids == 255)).size:
        raise DataError(f"text8 holds only a-z and space, found {bytes(raw[bad[:1]])!r} at character "
                        f"{bad[0]}; use the original text8 file")
    return ids


def decode(ids: torch.Tensor | np.ndarray | list[int]) -> str:
    """Classes 0..26 -> a string."""
    return "".join(ALPHABET[int(i)] for i in np.asarray(ids).reshape(-1))


def read_text8(path: str | os.PathLike[str], split: str) -> np.ndarray:
    """uint8 classes of one split: characters [0, 90%), [90%, 95%) or [95%, 100%) of the file."""
    raw = Path(path).read_bytes().rstrip(b"\n")
    lo, hi = SPLITS[split]
    return encode(raw[int(len(raw) * lo):int(len(raw) * hi)])


def text8_present(folder: Path | None = None) -> bool:
    return ((folder or data_dir("text8")) / "text8").exists()


def text8_file(root: str | None = None, download: bool | None = None) -> Path:
    """Path of the unzipped `<root>/text8/text8`, unzipping (and first downloading) text8.zip when missing."""
    folder = data_dir("text8", root)
    path = folder / "text8"
    if path.exists() and not download:
        return path
    ensure([ARCHIVE], folder, download=download, what="text8",
           hint=f", or the unzipped text8 file as {path}")
    try:
        with zipfile.ZipFile(folder / ARCHIVE.name) as archive:
            data = archive.read("text8")
    except (zipfile.BadZipFile, KeyError, OSError) as err:
        raise DataError(f"cannot read text8 from {folder / ARCHIVE.name} ({err}); delete it and download it "
                        "again") from None
    tmp = folder / ".text8.part"
    tmp.write_bytes(data)
    os.replace(tmp, path)
    return path


class Text8(Dataset):
    """Sequences of `seq_len` classes (int64 [seq_len]) cut from one split, one every `stride` characters."""

    def __init__(self, ids: np.ndarray, seq_len: int = 256, stride: int | None = None) -> None:
        if isinstance(seq_len, bool) or not isinstance(seq_len, int) or seq_len < 1:
            raise DataError(f"seq_len must be a positive integer, got {seq_len!r}")
        stride = seq_len if stride is None else stride
        if isinstance(stride, bool) or not isinstance(stride, int) or stride < 1:
            raise DataError(f"stride must be a positive integer, got {stride!r}")
        if len(ids) < seq_len:
            raise DataError(f"the split has {len(ids)} characters, fewer than seq_len={seq_len}; "
                            "lower seq_len")
        self.ids = torch.from_numpy(np.ascontiguousarray(ids))
        self.seq_len, self.stride = seq_len, stride

    def __len__(self) -> int:
        return (len(self.ids) - self.seq_len) // self.stride + 1

    def __getitem__(self, index: int) -> Item:
        index = index + len(self) if index < 0 else index
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} sequences")
        start = index * self.stride
        return self.ids[start:start + self.seq_len].long(), label_tensor(NO_LABEL)
