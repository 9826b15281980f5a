"""Bins on [-1, 1] and a Gaussian integrated over them, in log space: the one copy that BFN and DDPM share.

- `bin_centres(K)`: the centres k_c = (2k + 1)/K - 1, k = 0..K-1, of K equal bins on [-1, 1] (Graves et al. 2023,
  §5), the values of discretized data.
- `class_values(K)`: K discrete classes seen as values in [-1, 1], -1 + 2k/(K - 1) (binarized {0, 1} -> {-1, +1}).
- `binned_gaussian_log_probs(mean, std, values)`: ln P(k) = ln [Phi(z_hi) - Phi(z_lo)] for the bins around K sorted
  values (edges at the midpoints, the first and last bin extended to -inf and +inf): the discretised output
  distribution of BFN (Graves et al. 2023, §5.3, eq. 108-110) and the decoder of DDPM (Ho et al. 2020, eq. 13).

The bin probabilities are computed as differences of log Phi (`torch.special.log_ndtr`) in float64, on the side of
the distribution where the difference does not cancel, so a bin ten thousand standard deviations away still gets
its true log-probability (about -5e7 nats), never 0 or a floor.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def bin_centres(num_bins: int, *, device: torch.device | str | None = None,
                dtype: torch.dtype = torch.float32) -> Tensor:
    """Centres k_c = (2k + 1)/K - 1, k = 0..K-1, of K equal bins on [-1, 1] (Graves et al. 2023, §5), shape [K]."""
    k = torch.arange(num_bins, device=device, dtype=torch.float64)
    return ((2 * k + 1) / num_bins - 1).to(dtype)


def bin_index(x: Tensor, num_bins: int) -> Tensor:
    """Index k of the equal bin of [-1, 1] holding each value of x (the inverse of `bin_centres`), int64."""
    return ((x.double() + 1) * num_bins / 2).floor().clamp(0, num_bins - 1).long()


def class_values(num_classes: int, *, dtype: torch.dtype = torch.float64) -> Tensor:
    """K classes as values -1 + 2k/(K - 1) in [-1, 1] (the binarized {0, 1} as {-1, +1}), shape [K]."""
    return torch.linspace(-1, 1, num_classes, dtype=torch.float64).to(dtype)


def bin_edges(values: Tensor) -> Tensor:
    """Inner edges of the bins around sorted values v_1 < ... < v_K: the K - 1 midpoints (for `bin_centres` these
    are the equal-bin edges -1 + 2k/K)."""
    return (values[1:] + values[:-1]) / 2


def log1mexp(d: Tensor) -> Tensor:
    """ln(1 - exp(d)) for d <= 0, accurate at both ends (Maechler 2012, "Accurately computing log(1 - exp(-|a|))")."""
    return torch.where(d > -math.log(2), torch.log(-torch.expm1(d)), torch.log1p(-torch.exp(d)))


def log_normal_interval(z_lo: Tensor, z_hi: Tensor) -> Tensor:
    """ln [Phi(z_hi) - Phi(z_lo)] for finite z_lo < z_hi, without cancellation: right of 0 it is computed as
    ln [Phi(-z_lo) - Phi(-z_hi)]. Finite for every non-empty interval in float64."""
    right = z_lo > 0
    big = torch.special.log_ndtr(torch.where(right, -z_lo, z_hi))
    small = torch.special.log_ndtr(torch.where(right, -z_hi, z_lo))
    return big + log1mexp(small - big)


def binned_gaussian_log_probs(mean: Tensor, std: Tensor, values: Tensor) -> Tensor:
    """ln P(k) = ln [Phi((b_k - mean)/std) - Phi((a_k - mean)/std)] for the K bins around sorted `values` [K], the
    first and last bin extended to -inf and +inf (Graves et al. 2023, eq. 108-110; Ho et al. 2020, eq. 13).

    `mean` and `std` broadcast to one shape [*S]; the result is float64, shape [*S, K], computed in log space
    throughout (see the module docstring): no floor, exact to float64 rounding deep in either tail.
    """
    mean, std = torch.broadcast_tensors(mean.double(), std.double())
    edges = bin_edges(values.to(device=mean.device, dtype=torch.float64))  # [K - 1]
    z = (edges - mean.unsqueeze(-1)) / std.unsqueeze(-1)  # [*S, K - 1]
    first = torch.special.log_ndtr(z[..., :1])  # ln Phi(z_1): the bin (-inf, b_1]
    last = torch.special.log_ndtr(-z[..., -1:])  # ln (1 - Phi(z_{K-1})): the bin (b_{K-1}, inf)
    inner = log_normal_interval(z[..., :-1], z[..., 1:])  # [*S, K - 2]
    return torch.cat([first, inner, last], dim=-1)
