"""Broadcasting helpers."""

from __future__ import annotations

import torch
from torch import Tensor


def append_dims(t: Tensor, ndim: int) -> Tensor:
    """Append trailing singleton dims to `t` until it has `ndim` dims (for per-example [B] tensors)."""
    missing = ndim - t.ndim
    if missing < 0:
        raise ValueError(f"cannot broadcast a {t.ndim}-dim tensor to {ndim} dims")
    return t.reshape(t.shape + (1,) * missing)


def sum_except_batch(x: Tensor) -> Tensor:
    """Sum over every dim but the first: per-example totals, shape [B]."""
    return x.reshape(x.shape[0], -1).sum(dim=1)


def randn(shape: tuple[int, ...] | torch.Size, *, generator: torch.Generator | None = None,
          device: torch.device | str | None = None, dtype: torch.dtype = torch.float32) -> Tensor:
    """Standard normal noise drawn from `generator` on its device, then moved to `device`."""
    gen_device = generator.device if generator is not None else device
    return torch.randn(tuple(shape), generator=generator, device=gen_device, dtype=dtype).to(device)


def rand(shape: tuple[int, ...] | torch.Size, *, generator: torch.Generator | None = None,
         device: torch.device | str | None = None, dtype: torch.dtype = torch.float32) -> Tensor:
    """Uniform [0, 1) noise drawn from `generator` on its device, then moved to `device`."""
    gen_device = generator.device if generator is not None else device
    return torch.rand(tuple(shape), generator=generator, device=gen_device, dtype=dtype).to(device)
