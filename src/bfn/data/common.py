"""Shared pieces: the cache folder, grey-level transforms and the image datasets built on them."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from bfn.errors import DataError
from bfn.utils.binned import bin_centres

Item = tuple[Tensor, Tensor]
NO_LABEL = -1


def data_dir(name: str, root: str | os.PathLike[str] | None = None) -> Path:
    """Folder of dataset `name`: `<root>/<name>`, root = `root`, else $BFN_DATA_DIR, else ~/.cache/bfn."""
    base = root or os.environ.get("BFN_DATA_DIR") or Path.home() / ".cache" / "bfn"
    return Path(base).expanduser() / name


def grey_to_centres_table(num_bins: int) -> Tensor:
    """Lookup table [256]: grey level g -> centre of bin k = floor(g * K / 256)."""
    k = torch.arange(256) * num_bins // 256
    return bin_centres(num_bins)[k]


#: the generator seed of the official BFN code's train/validation split (torch.utils.data.random_split)
OFFICIAL_SPLIT_SEED = 2147483647


def holdout_split(n: int, fraction: float, split: str) -> np.ndarray:
    """Indices of `split` ("train" or "valid") when `fraction` of n training examples is held out for validation,
    drawn exactly as the official BFN code draws them: `random_split(range(n), [1 - f, f])` with a generator seeded
    2147483647 (lengths floor(n (1 - f)) and floor(n f), a remainder dealt out in turn)."""
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction < 1:
        raise DataError(f"holdout must be a fraction in (0, 1), e.g. 0.01, got {fraction!r}")
    import math

    lengths = [math.floor(n * (1 - fraction)), math.floor(n * fraction)]
    for i in range(n - sum(lengths)):
        lengths[i % 2] += 1
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(OFFICIAL_SPLIT_SEED)).numpy()
    return perm[:lengths[0]] if split == "train" else perm[lengths[0]:]


def label_tensor(label: int) -> Tensor:
    """A label as the int64 scalar tensor every dataset item carries (-1: no label)."""
    return torch.tensor(int(label), dtype=torch.int64)


def check_bins(num_bins: object) -> int:
    """Validate a number of bins (2..256 for 8-bit grey levels)."""
    if isinstance(num_bins, bool) or not isinstance(num_bins, int) or not 2 <= num_bins <= 256:
        raise DataError(f"bins must be an integer from 2 to 256 (e.g. 16 or 256), got {num_bins!r}")
    return num_bins


class GreyImages(Dataset):
    """uint8 grey-level images [N, C, H, W] with labels [N], served in one of two data formats.

    Args:
        images: uint8 array or tensor [N, C, H, W].
        labels: integer labels [N], or None (items then carry -1).
        mode: "binarized": int64 {0, 1}, a fresh Bernoulli(g / 255) draw per pixel on every access (the
            dynamic binarization of the BFN paper); "discretized": float32 bin centres of `num_bins` bins.
        num_bins: K for "discretized".
        generator: torch generator for the Bernoulli draws; None uses the global torch RNG.
    """

    def __init__(self, images: np.ndarray | Tensor, labels: np.ndarray | Tensor | None, mode: str, *,
                 num_bins: int = 256, generator: torch.Generator | None = None) -> None:
        self.images = torch.as_tensor(np.asarray(images, dtype=np.uint8))
        self.labels = None if labels is None else torch.as_tensor(np.asarray(labels, dtype=np.int64))
        if mode not in ("binarized", "discretized"):
            raise ValueError(f"mode must be 'binarized' or 'discretized', got {mode!r}")
        self.mode = mode
        self.generator = generator
        self.table = grey_to_centres_table(num_bins)

    def __len__(self) -> int:
        return self.images.shape[0]

    def label(self, index: int) -> Tensor:
        return label_tensor(NO_LABEL if self.labels is None else int(self.labels[index]))

    def __getitem__(self, index: int) -> Item:
        grey = self.images[index]
        if self.mode == "binarized":
            return binarize(grey, self.generator), self.label(index)
        return self.table[grey.long()], self.label(index)


def binarize(grey: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Dynamic binarization: int64 {0, 1} with P(1) = g / 255 per pixel, freshly drawn on each call."""
    return torch.bernoulli(grey.float() / 255.0, generator=generator).long()
