"""Move per-variable features between the flows' layout [B, *S, F] and what a network takes.

- "image": data [B, C, H, W] -> network channels [B, C*F, H, W] (features next to their channel);
- "sequence": data [B, L] -> tokens [B, L, F];
- "flat": data [B, D] (or any shape) -> vectors [B, prod(S)*F].
"""

from __future__ import annotations

from typing import Literal

from torch import Tensor

from bfn.errors import DataError

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
    if network == "transformer":
        return "sequence"
    return "image" if len(data_shape) == 3 else "flat"


def check_data_shape(x: Tensor, data_shape: tuple[int, ...]) -> None:
    """A batch must be a tensor of shape (B, *data_shape); otherwise a one-line DataError naming the fix."""
    if not isinstance(x, Tensor):
        raise DataError(f"expected a torch.Tensor batch, got {type(x).__name__}")
    if tuple(x.shape[1:]) != data_shape:
        raise DataError(f"data has shape {tuple(x.shape)} but the model expects (batch, "
                        f"{', '.join(map(str, data_shape))}); reshape the batch or use a matching preset")
