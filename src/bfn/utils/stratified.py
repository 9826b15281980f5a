"""Stratified standard-normal draws: M points, one in each of M equal-probability strata of N(0, 1).

z_j = Phi^-1((j + u_j) / M), j = 0..M-1, u_j ~ U(0, 1) independent. Each z_j is drawn from N(0, 1) restricted to its
stratum, so (1/M) sum_j f(z_j) is an unbiased estimate of E f(z) for any f, with a variance that falls like M^-3
for smooth f instead of the M^-1 of M independent draws (e.g. Owen, "Monte Carlo theory, methods and examples",
§10.1). Used for the sender-receiver KL of the n-step bounds (Graves et al. 2023, eq. 26).
"""

from __future__ import annotations

import torch
from torch import Tensor

from bfn.utils.tensors import rand

#: keeps Phi^-1 finite: u is drawn in [0, 1) and a u of exactly 0 would give -inf
_EDGE = 1e-300


def stratified_normal(m: int, shape: tuple[int, ...], *, generator: torch.Generator | None = None,
                      device: torch.device | str | None = None) -> Tensor:
    """M stratified N(0, 1) draws per element of `shape`, float64 [M, *shape] (stratum j in row j)."""
    if m < 1:
        raise ValueError(f"the number of strata must be positive, got {m}")
    u = rand((m, *shape), generator=generator, device=device, dtype=torch.float64)
    j = torch.arange(m, device=u.device, dtype=torch.float64).reshape(m, *([1] * len(shape)))
    return torch.special.ndtri(((j + u) / m).clamp(_EDGE, 1 - 1e-16))
