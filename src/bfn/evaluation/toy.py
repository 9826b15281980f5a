"""Checks for 1-D toy data: Wasserstein-1 distance to fresh data draws and the share of samples per mode."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


def wasserstein_1d(a: Tensor, b: Tensor) -> float:
    """W1 between two equal-size 1-D samples: the mean |a_(i) - b_(i)| of the sorted values (order statistics)."""
    a, b = a.reshape(-1).sort().values, b.reshape(-1).sort().values
    if a.numel() != b.numel():
        raise ValueError(f"wasserstein_1d needs samples of equal size, got {a.numel()} and {b.numel()}")
    return float((a - b).abs().mean())


def mode_fractions(x: Tensor, means: Sequence[float]) -> list[float]:
    """Fraction of samples whose nearest mixture mean is each of `means`."""
    centres = torch.tensor(list(means), dtype=x.dtype)
    nearest = (x.reshape(-1, 1) - centres).abs().argmin(1)
    return [float((nearest == k).float().mean()) for k in range(len(centres))]
