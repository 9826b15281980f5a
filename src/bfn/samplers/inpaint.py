"""Conditioning any BFN sampler on observed variables (inpainting), through its output function.

Two changes at every network call, for the variables where the mask is true (method "exact", the default):
1. the network sees them at infinite accuracy: one-hot class probabilities (discrete data), mean = the observed
   value (continuous and discretised data), the alpha -> infinity limit of the Bayesian update;
2. p_O is replaced there by a point mass on the observation, so every sampler sends the true value (the paper's
   samplers draw x' from p_O, the solvers integrate towards the data estimate of p_O) and the final draw returns
   the observations exactly.
For discrete data and a Bayes-optimal network this samples the exact conditional p(x_free | x_obs): the posterior
over x given theta then conditions on x_obs (tests/test_inpaint.py checks it on a correlated toy, TV about 0.002).
Method "flow" does only step 2, the analogue of the replacement method of score-based inpainting (Song et al.
2021, App. I.2): the observed variables follow the Bayesian flow p_F(theta | x_obs; t) of the observations, which
keeps the network's inputs on its training distribution but tells it about x_obs only gradually; it is biased
(TV 0.20 on the toy, against 0.44 for no conditioning). On binarized MNIST with the top half observed (100 test
digits, 50 steps, the mnist-discrete run) the classifier recognised the true digit in 83% of "exact" completions,
59% of "flow" completions and 53% of half-blank images.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import Tensor

from bfn.errors import ConfigError, DataError
from bfn.flows.base import BayesianFlow
from bfn.samplers.base import OutputFn


def check_observation(known: Tensor, mask: Tensor, shape: tuple[int, ...]) -> tuple[Tensor, Tensor]:
    """Broadcast an observation `known` and its boolean `mask` (true = observed) to the batch shape (B, *S).

    Either may have the shape of one example S or of the batch (B, *S).
    """
    batch, example = shape[0], tuple(shape[1:])
    out = []
    for name, value in (("known values", known), ("mask", mask)):
        if not isinstance(value, Tensor):
            raise DataError(f"inpainting {name} must be a tensor, got {type(value).__name__}")
        if tuple(value.shape) == example:
            value = value.unsqueeze(0).expand(batch, *example)
        elif tuple(value.shape) != (batch, *example):
            raise DataError(f"inpainting {name} have shape {list(value.shape)}; expected one example {list(example)}"
                            f" or a batch {[batch, *example]}")
        out.append(value)
    known, mask = out
    if mask.dtype != torch.bool:
        if not torch.all((mask == 0) | (mask == 1)):
            raise DataError("the inpainting mask must be boolean or 0/1 (1 = observed pixel)")
        mask = mask.bool()
    return known, mask


InpaintMethod = Literal["exact", "flow"]
INPAINT_METHODS: tuple[str, ...] = ("exact", "flow")


def certain_theta(flow: BayesianFlow, theta: Any, known: Tensor, mask: Tensor) -> Any:
    """theta with the observed variables at infinite accuracy (`BayesianFlow.observe`)."""
    return flow.observe(theta, known, mask)


def observed_output_fn(flow: BayesianFlow, output_fn: OutputFn, known: Tensor, mask: Tensor,
                       method: InpaintMethod = "exact") -> OutputFn:
    """`output_fn` conditioned on the observation `known` where `mask` is true (see the module docstring).

    Both methods fix p_O to a point mass on the observation there (output distributions implement
    `observed(x, mask)`); "exact" also shows the network the observed variables at infinite accuracy.
    """
    if method not in INPAINT_METHODS:
        raise ConfigError(f"unknown inpainting method {method!r}; choose one of {', '.join(INPAINT_METHODS)}")

    def fn(theta: Any, t: Tensor) -> Any:
        if method == "exact":
            theta = certain_theta(flow, theta, known, mask)
        return output_fn(theta, t).observed(known, mask)

    return fn
