"""Time and label embeddings shared by the networks.

Time `t` is a float tensor [B] in [0, 1]; labels are a LongTensor [B] in [0, num_classes], where the value
`num_classes` is the null label used for classifier-free guidance (Ho & Salimans 2022).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bfn.errors import ConfigError


def check_inputs(x: Tensor, t: Tensor, name: str) -> None:
    """Raise ValueError unless `t` has shape [B] for the batch of `x`."""
    if t.shape != (x.shape[0],):
        raise ValueError(f"{name}: t must have shape [B] = [{x.shape[0]}], got {list(t.shape)}")


def resolve_labels(cond: Tensor | None, num_classes: int | None, batch_size: int, device: torch.device,
                   name: str) -> Tensor | None:
    """The labels a network embeds: None for an unconditional network, else a LongTensor [B].

    `cond=None` on a conditional network means the null label (index `num_classes`) for every example.
    """
    if num_classes is None:
        if cond is not None:
            raise ValueError(f"{name} was built with num_classes=None, so cond must be None")
        return None
    if cond is None:
        return torch.full((batch_size,), num_classes, dtype=torch.long, device=device)
    if cond.shape != (batch_size,) or cond.dtype != torch.long:
        raise ValueError(f"{name}: cond must be a LongTensor of shape [{batch_size}], "
                         f"got {cond.dtype} {list(cond.shape)}")
    return cond


class FourierFeatures(nn.Module):
    """[sin(w_k t), cos(w_k t)] for a geometric ladder of angular frequencies w_k in [min, max].

    With the defaults (0.1 ... 1000) this is the sinusoidal embedding of DDPM (Ho et al. 2020, after
    Vaswani et al. 2017) applied to the integer step 1000 t, so t in [0, 1] resolves a 1000-step grid.
    """

    def __init__(self, *, features: int, min_frequency: float = 0.1, max_frequency: float = 1000.0) -> None:
        super().__init__()
        if features < 2 or features % 2:
            raise ConfigError(f"Fourier features must be an even number >= 2, got {features}")
        half = features // 2
        frequencies = torch.exp(torch.linspace(math.log(max_frequency), math.log(min_frequency), half))
        # derived from the constructor arguments, so not part of the state dict
        self.register_buffer("frequencies", frequencies, persistent=False)
        self.features = features

    frequencies: Tensor

    def forward(self, t: Tensor) -> Tensor:
        angles = t.float()[:, None] * self.frequencies[None, :]  # (B, features/2)
        return torch.cat([angles.sin(), angles.cos()], dim=1)  # (B, features)


class TimeEmbedding(nn.Module):
    """Fourier features of t followed by Linear-SiLU-Linear: [B] -> [B, dim] (Ho et al. 2020, App. B)."""

    def __init__(self, *, dim: int, features: int) -> None:
        super().__init__()
        self.features = FourierFeatures(features=features)
        self.linear1 = nn.Linear(features, dim)
        self.linear2 = nn.Linear(dim, dim)

    def forward(self, t: Tensor) -> Tensor:
        return self.linear2(F.silu(self.linear1(self.features(t))))


class ConditionEmbedding(nn.Module):
    """Time embedding plus, for a class-conditional network, a label embedding added to it.

    The label table has `num_classes + 1` rows; the last one is the learned null label.
    """

    def __init__(self, *, dim: int, features: int, num_classes: int | None = None) -> None:
        super().__init__()
        if num_classes is not None and num_classes < 1:
            raise ConfigError(f"num_classes must be a positive integer or None, got {num_classes}")
        self.num_classes = num_classes
        self.time = TimeEmbedding(dim=dim, features=features)
        self.label = nn.Embedding(num_classes + 1, dim) if num_classes is not None else None

    def forward(self, t: Tensor, labels: Tensor | None) -> Tensor:
        emb = self.time(t)
        if self.label is not None:
            assert labels is not None, "labels are resolved by the caller (resolve_labels)"
            emb = emb + self.label(labels)
        return emb
