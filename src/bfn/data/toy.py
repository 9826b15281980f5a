"""Gaussian mixtures: the 1-D four-component mixture of seed 002 and a 2-D ring of eight Gaussians."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.utils.data import Dataset

from bfn.data.common import NO_LABEL, Item, label_tensor


@dataclass(frozen=True)
class MixtureSpec:
    """An isotropic Gaussian mixture: component means [M][D], one shared std, weights [M] summing to 1."""

    means: tuple[tuple[float, ...], ...]
    std: float
    weights: tuple[float, ...]

    @property
    def dim(self) -> int:
        return len(self.means[0])

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """n float32 draws [n, D] (component, then Gaussian noise, both from `generator`)."""
        return self.sample_with_components(n, generator)[0]

    def sample_with_components(self, n: int,
                               generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """Draws [n, D] and the index [n] of the component each came from."""
        weights = torch.tensor(self.weights, dtype=torch.float64)
        comp = torch.multinomial(weights, n, replacement=True, generator=generator)
        noise = torch.randn(n, self.dim, generator=generator, dtype=torch.float64)
        x = torch.tensor(self.means, dtype=torch.float64)[comp] + self.std * noise
        return x.float(), comp

    def log_prob(self, x: Tensor) -> Tensor:
        """float32 log density [n] of points x [n, D] (or [n] when D = 1), computed in float64."""
        x = torch.as_tensor(x, dtype=torch.float64).reshape(-1, self.dim)
        means = torch.tensor(self.means, dtype=torch.float64)
        sq = ((x[:, None, :] - means[None]) ** 2).sum(-1)  # [n, M]
        log_norm = -0.5 * self.dim * math.log(2 * math.pi * self.std**2)
        log_w = torch.tensor(self.weights, dtype=torch.float64).log()
        return torch.logsumexp(log_w + log_norm - 0.5 * sq / self.std**2, dim=-1).float()


MIXTURE_1D = MixtureSpec(means=((-0.75,), (-0.25,), (0.25,), (0.75,)), std=0.05, weights=(0.25,) * 4)
MIXTURE_2D = MixtureSpec(
    means=tuple((0.7 * math.cos(2 * math.pi * j / 8), 0.7 * math.sin(2 * math.pi * j / 8)) for j in range(8)),
    std=0.05, weights=(0.125,) * 8)


def mixture_1d_sample(n: int, generator: torch.Generator | None = None) -> Tensor:
    """n fresh draws [n, 1] from the 1-D four-component mixture."""
    return MIXTURE_1D.sample(n, generator)


def mixture_1d_log_prob(x: Tensor) -> Tensor:
    """Log density [n] of the 1-D mixture at x ([n] or [n, 1])."""
    return MIXTURE_1D.log_prob(x)


class MixtureDataset(Dataset):
    """`size` draws from `spec`, fixed by `seed`; items are (float32 [D], -1)."""

    def __init__(self, spec: MixtureSpec, size: int, seed: int = 0) -> None:
        self.spec = spec
        self.x = spec.sample(size, torch.Generator().manual_seed(seed))

    def __len__(self) -> int:
        return self.x.shape[0]

    def __getitem__(self, index: int) -> Item:
        return self.x[index], label_tensor(NO_LABEL)
