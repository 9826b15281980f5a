"""Checks at the models' API boundary, shared by every generative model: one-line errors that name the fix."""

from __future__ import annotations

import torch
from torch import Tensor

from bfn.errors import ConfigError, DataError


def check_data_shape(x: Tensor, data_shape: tuple[int, ...]) -> None:
    """A batch must be a tensor of shape (B, *data_shape)."""
    if not isinstance(x, Tensor):
        raise DataError(f"expected a torch.Tensor batch, got {type(x).__name__}")
    if tuple(x.shape[1:]) != data_shape:
        raise DataError(f"data has shape {tuple(x.shape)} but the model expects (batch, "
                        f"{', '.join(map(str, data_shape))}); reshape the batch or use a matching preset")


def check_labels(cond: Tensor, num_labels: int | None, batch: int | None = None) -> Tensor:
    """Labels must be integers [batch] in 0..num_labels-1 (num_labels itself is the null label) and need a
    conditional model; returns them as int64."""
    if num_labels is None:
        raise ConfigError("this model is unconditional; drop the label (train a -cond preset for labels)")
    if not isinstance(cond, Tensor) or cond.is_floating_point() or cond.is_complex() or cond.dtype == torch.bool:
        raise ConfigError(f"labels must be an integer tensor, got {getattr(cond, 'dtype', type(cond).__name__)}")
    if cond.ndim != 1 or (batch is not None and cond.shape[0] != batch):
        raise ConfigError(f"labels must have shape ({batch if batch is not None else 'batch'},), one per example, "
                          f"got {tuple(cond.shape)}")
    if cond.numel() and (cond.min() < 0 or cond.max() > num_labels):
        raise ConfigError(f"labels must lie in 0..{num_labels - 1}, got {cond.min().item()}..{cond.max().item()}")
    return cond.long()
