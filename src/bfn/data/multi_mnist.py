"""Multi-digit MNIST: 64x64 canvases holding two digits, composed deterministically from a seed."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset

from bfn.data.common import Item, binarize, label_tensor

CANVAS = 64
DIGIT = 28
# Top-left corners: rows 0..36 anywhere; columns 0..8 for the left digit and 28..36 for the right one, so
# the two digits overlap by at most 8 columns (MNIST digits have ~4 blank columns each side).
ROW_RANGE = CANVAS - DIGIT + 1
LEFT_COLS = (0, 9)
RIGHT_COLS = (CANVAS - DIGIT - 8, CANVAS - DIGIT + 1)


@dataclass(frozen=True)
class Layout:
    """Where canvas i takes its digits from: source indices and top-left corners (row, col)."""

    left: int
    right: int
    left_at: tuple[int, int]
    right_at: tuple[int, int]


class MultiDigit(Dataset):
    """Canvases [1, 64, 64] with a left and a right MNIST digit; label = 10 * left + right digit (0..99).

    Canvas i depends only on (seed, i) and the source digits, not on `size`: uniform draws u_i in [0, 1)^6
    come from one numpy stream seeded by `seed`, one row per canvas. The canvas is the pixelwise max of the
    two placed grey digits; "binarized" items are a fresh Bernoulli(g / 255) draw per access.

    Args:
        images, labels: source digits uint8 [N, 28, 28] and labels [N] (one split of MNIST).
        size: number of canvases.
        seed: layout seed.
        generator: torch generator for the binarization draws; None uses the global torch RNG.
    """

    def __init__(self, images: np.ndarray, labels: np.ndarray, size: int, *, seed: int = 0,
                 generator: torch.Generator | None = None) -> None:
        self.images = torch.as_tensor(np.asarray(images, dtype=np.uint8))
        self.labels = np.asarray(labels, dtype=np.int64)
        self.generator = generator
        u = np.random.default_rng(seed).random((size, 6))
        n = len(self.labels)
        left_w, right_w = LEFT_COLS[1] - LEFT_COLS[0], RIGHT_COLS[1] - RIGHT_COLS[0]
        scale = np.array([n, n, ROW_RANGE, left_w, ROW_RANGE, right_w])
        offset = np.array([0, 0, 0, LEFT_COLS[0], 0, RIGHT_COLS[0]])
        self.draws = (np.floor(u * scale) + offset).astype(np.int64)  # [size, 6]

    def __len__(self) -> int:
        return len(self.draws)

    def layout(self, index: int) -> Layout:
        a, b, r1, c1, r2, c2 = (int(v) for v in self.draws[index])
        return Layout(a, b, (r1, c1), (r2, c2))

    def label(self, index: int) -> int:
        lay = self.layout(index)
        return int(10 * self.labels[lay.left] + self.labels[lay.right])

    def canvas(self, index: int) -> torch.Tensor:
        """Grey canvas uint8 [1, 64, 64] of item `index`."""
        lay = self.layout(index)
        out = torch.zeros(CANVAS, CANVAS, dtype=torch.uint8)
        for src, (r, c) in ((lay.left, lay.left_at), (lay.right, lay.right_at)):
            region = out[r:r + DIGIT, c:c + DIGIT]
            torch.maximum(region, self.images[src], out=region)
        return out[None]

    def __getitem__(self, index: int) -> Item:
        return binarize(self.canvas(index), self.generator), label_tensor(self.label(index))
