"""Move per-variable features between the flows' layout [B, *S, F] and what a network takes.

- "image": data [B, C, H, W] -> network channels [B, C*F, H, W] (features next to their channel);
- "sequence": data [B, L] -> tokens [B, L, F];
- "flat": data [B, D] (or any shape) -> vectors [B, prod(S)*F].
"""

from __future__ import annotations

from typing import Literal

from torch import Tensor

Layout = Literal["image", "sequence", "flat"]


def to_network(x: Tensor, layout: Layout) -> Tensor:
    """[B, *S, F] -> the network's input layout."""
    if layout == "image":
        b, c, h, w, f = x.shape
        return x.permute(0, 1, 4, 2, 3).reshape(b, c * f, h, w)  # (B, C*F, H, W)
    if layout == "sequence":
        return x
    return x.reshape(x.shape[0], -1)  # (B, D*F)


def from_network(y: Tensor, layout: Layout, data_shape: tuple[int, ...], features: int) -> Tensor:
    """The network's output -> [B, *S, G] with G = `features`."""
    b = y.shape[0]
    if layout == "image":
        c, h, w = data_shape
        return y.reshape(b, c, features, h, w).permute(0, 1, 3, 4, 2)  # (B, C, H, W, G)
    if layout == "sequence":
        return y
    return y.reshape(b, *data_shape, features)


def default_layout(data_shape: tuple[int, ...], network: str) -> Layout:
    if network in ("transformer", "official-text8-gpt"):
        return "sequence"
    return "image" if len(data_shape) == 3 else "flat"

