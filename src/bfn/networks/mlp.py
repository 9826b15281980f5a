"""Fully connected network with Fourier time features, for 1-D/2-D toy data (e.g. Gaussian mixtures)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bfn.errors import ConfigError, DataError
from bfn.networks.embeddings import FourierFeatures, check_inputs, resolve_labels


class MLP(nn.Module):
    """[B, in_features] -> [B, out_features]: concat(x, Fourier(t)) through `depth` Linear-SiLU layers.

    Fourier features of t (sin/cos on a geometric frequency ladder, Tancik et al. 2020) let a small network
    resolve fast changes in t that a raw scalar input would smooth over.

    Args:
        in_features: input width.
        out_features: output width.
        hidden: width of the hidden layers.
        depth: number of hidden Linear-SiLU layers.
        time_features: number of Fourier features of t (even).
        num_classes: number of class labels for class-conditional use; label `num_classes` is the null label.
    """

    def __init__(self, *, in_features: int, out_features: int, hidden: int = 256, depth: int = 3,
                 time_features: int = 32, num_classes: int | None = None) -> None:
        super().__init__()
        if depth < 1:
            raise ConfigError(f"depth must be >= 1, got {depth}")
        self.in_features = in_features
        self.num_classes = num_classes
        self.time = FourierFeatures(features=time_features, min_frequency=1.0, max_frequency=1000.0)
        # a label embedding added to the first pre-activation = a one-hot label input to the first layer
        self.label = nn.Embedding(num_classes + 1, hidden) if num_classes is not None else None
        self.layers = nn.ModuleList(
            nn.Linear(in_features + time_features if i == 0 else hidden, hidden) for i in range(depth)
        )
        self.out = nn.Linear(hidden, out_features)
        # zero init: the network starts by predicting 0, like the U-Net and the Transformer
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: Tensor, t: Tensor, cond: Tensor | None = None) -> Tensor:
        if x.ndim != 2 or x.shape[1] != self.in_features:
            raise DataError(f"MLP expects input [B, {self.in_features}], got {list(x.shape)}")
        check_inputs(x, t, "MLP")
        labels = resolve_labels(cond, self.num_classes, x.shape[0], x.device, "MLP")
        h = self.layers[0](torch.cat([x, self.time(t).to(x.dtype)], dim=1))  # (B, hidden)
        if self.label is not None:
            h = h + self.label(labels)
        h = F.silu(h)
        for layer in self.layers[1:]:
            h = F.silu(layer(h))
        return self.out(h)
