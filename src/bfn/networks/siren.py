"""Sine-activation network (SIREN, Sitzmann et al. 2020, arXiv 2006.09661) for low-dimensional data."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from bfn.errors import ConfigError, DataError
from bfn.networks.embeddings import check_inputs, resolve_labels


class Siren(nn.Module):
    """[B, in_features] -> [B, out_features]: concat(x, t) through `depth` layers sin(bandwidth * Linear(.)).

    Initialisation follows Sitzmann et al. 2020, §3.2 with omega_0 = `bandwidth`: the first layer's weights
    are U(-1/n, 1/n) for n inputs, later layers (and the linear output) U(-c, c) with c = sqrt(6/n)/bandwidth,
    so every pre-activation stays ~ arcsine-distributed whatever the depth.

    Args:
        in_features, out_features: input and output width (t is appended as one more input).
        hidden: width of the sine layers.
        depth: number of sine layers.
        bandwidth: omega_0, the frequency multiplier inside every sine.
        num_classes: number of class labels for class-conditional use; label `num_classes` is the null label.
    """

    def __init__(self, *, in_features: int, out_features: int, hidden: int = 128, depth: int = 2,
                 bandwidth: float = 10.0, num_classes: int | None = None) -> None:
        super().__init__()
        if depth < 1 or bandwidth <= 0:
            raise ConfigError(f"depth must be >= 1 and bandwidth > 0, got depth={depth}, bandwidth={bandwidth}")
        self.in_features = in_features
        self.num_classes = num_classes
        self.bandwidth = float(bandwidth)
        n_in = in_features + 1
        self.layers = nn.ModuleList(nn.Linear(n_in if i == 0 else hidden, hidden) for i in range(depth))
        self.out = nn.Linear(hidden, out_features)
        # the label embedding acts as a one-hot label input to the first layer, so it shares that layer's init
        self.label = nn.Embedding(num_classes + 1, hidden) if num_classes is not None else None
        with torch.no_grad():
            self.layers[0].weight.uniform_(-1 / n_in, 1 / n_in)  # type: ignore[operator]
            if self.label is not None:
                self.label.weight.uniform_(-1 / n_in, 1 / n_in)
            bound = math.sqrt(6 / hidden) / self.bandwidth
            for layer in [*self.layers[1:], self.out]:
                layer.weight.uniform_(-bound, bound)

    def forward(self, x: Tensor, t: Tensor, cond: Tensor | None = None) -> Tensor:
        if x.ndim != 2 or x.shape[1] != self.in_features:
            raise DataError(f"Siren expects input [B, {self.in_features}], got {list(x.shape)}")
        check_inputs(x, t, "Siren")
        labels = resolve_labels(cond, self.num_classes, x.shape[0], x.device, "Siren")
        h = self.layers[0](torch.cat([x, t[:, None].to(x.dtype)], dim=1))  # (B, hidden)
        if self.label is not None:
            h = h + self.label(labels)
        h = torch.sin(self.bandwidth * h)
        for layer in self.layers[1:]:
            h = torch.sin(self.bandwidth * layer(h))
        return self.out(h)
