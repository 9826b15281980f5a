"""Exponential moving average of the weights, with a warm-up, on torch's own `AveragedModel`."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel


def ema_model(model: nn.Module, decay: float, warmup: bool = True) -> AveragedModel:
    """EMA copy of `model`; the effective decay is min(decay, (1 + n) / (10 + n)) after n updates, so early
    weights are not frozen in (the warm-up of Tan & Le / k-diffusion's EMAWarmup, simplified); without `warmup`
    it is `decay` from the first update (the official BFN code)."""

    @torch.no_grad()
    def update(ema_params: list[Tensor] | tuple[Tensor, ...], params: list[Tensor] | tuple[Tensor, ...],
               num_averaged: Tensor | int) -> None:
        n = float(num_averaged)
        d = min(decay, (1 + n) / (10 + n)) if warmup else decay
        torch._foreach_lerp_(ema_params, params, 1 - d)

    return AveragedModel(model, multi_avg_fn=update, use_buffers=True)
