"""What every BFN sampler shares: the output callable, the per-step callback and the sampler registry."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import torch
from torch import Tensor

from bfn.errors import ConfigError
from bfn.flows.base import BayesianFlow

#: (theta, t [B]) -> output distribution p_O(. | theta; t); conditioning and guidance live inside it.
OutputFn = Callable[[Any, Tensor], Any]
FinalChoice = Literal["sample", "mode", "mean"]


@dataclass
class StepInfo:
    """What a sampler reports after each step: step i of n (1-based), its start time t, the input
    parameters theta *before* the step's update and the output distribution p_O(. | theta; t)."""

    i: int
    n: int
    t: float
    theta: Any
    output: Any


Callback = Callable[[StepInfo], None]


class Sampler(Protocol):
    def __call__(self, flow: BayesianFlow, output_fn: OutputFn, shape: tuple[int, ...], steps: int, *,
                 generator: torch.Generator | None = None, callback: Callback | None = None,
                 device: torch.device | str | None = None, final: FinalChoice = "sample") -> Tensor: ...


def check_steps(steps: int) -> int:
    if isinstance(steps, bool) or not isinstance(steps, int) or steps <= 0:
        raise ConfigError(f"steps must be a positive integer, got {steps!r}")
    return steps


def final_value(output: Any, final: FinalChoice, generator: torch.Generator | None) -> Tensor:
    """The returned sample: a draw from p_O (the paper), its mode, or its mean (in data format)."""
    if final == "sample":
        return output.sample(generator)
    if final == "mode":
        return output.mode
    if final == "mean":
        return output.mean
    raise ConfigError(f"final must be 'sample', 'mode' or 'mean', got {final!r}")
