"""Move per-variable features between the flows' layout [B, *S, F] and what a network takes.

- "image": data [B, C, H, W] -> network channels [B, C*F, H, W] (features next to their channel);
- "sequence": data [B, L] -> tokens [B, L, F];
- "flat": data [B, D] (or any shape) -> vectors [B, prod(S)*F].
"""

from __future__ import annotations

from typing import Literal

from torch import Tensor

from bfn.errors import ConfigError

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



#: networks that take images [B, C, H, W] (all others take vectors or token sequences)
IMAGE_NETWORKS = ("unet",)


def check_layout(network: str, layout: str, data_shape: tuple[int, ...]) -> None:
    """A layout the data's shape and the network can take, or a one-line ConfigError naming the fix."""
    own = "`bfn train FILE.npy` infers the layout by itself"
    if layout == "image" and len(data_shape) != 3:
        raise ConfigError(f"model.layout=image needs examples of shape (C, H, W), but the data's are {data_shape}; "
                          f"for (N, H, W) arrays give data.options.layout=NHW (a channel axis is added); {own}")
    if layout == "sequence" and len(data_shape) != 1:
        raise ConfigError(f"model.layout=sequence needs examples of shape (L,), but the data's are {data_shape}; "
                          "use model.layout=flat or reshape the data")
    if network in IMAGE_NETWORKS and layout != "image":
        raise ConfigError(f"network {network!r} takes images (C, H, W), but the data's examples have shape "
                          f"{data_shape}; choose model.network.name=mlp (or transformer for sequences), or give "
                          f"images (data.options.layout=NHW for (N, H, W) arrays); {own}")
