"""The paper's sample-generation procedures (Graves et al. 2023, Algorithms 3, 6 and 9) and their output-mean
variant, written once for every flow: each step draws x' from p_O (or takes its mean), sends
y ~ p_S(y | x'; alpha_i) and applies the Bayesian update."""

from __future__ import annotations

import torch
from torch import Tensor

from bfn.flows.base import BayesianFlow
from bfn.samplers.base import Callback, FinalChoice, OutputFn, StepInfo, check_steps, final_value


def _sample(flow: BayesianFlow, output_fn: OutputFn, shape: tuple[int, ...], steps: int, *, use_mean: bool,
            generator: torch.Generator | None, callback: Callback | None, device: torch.device | str | None,
            final: FinalChoice) -> Tensor:
    check_steps(steps)
    theta = flow.prior(shape, device=device)
    batch = shape[0]
    for i in range(1, steps + 1):
        t = (i - 1) / steps
        output = output_fn(theta, torch.full((batch,), t, device=device))
        x_prime = output.mean if use_mean else output.sample(generator)
        alpha = flow.accuracy(i, steps).to(device)
        y = flow.sender(x_prime, alpha, generator=generator)
        if callback is not None:
            callback(StepInfo(i=i, n=steps, t=t, theta=theta, output=output))
        theta = flow.update(theta, y, alpha)
    output = output_fn(theta, torch.ones(batch, device=device))
    return final_value(output, final, generator)


@torch.no_grad()
def paper_sampler(flow: BayesianFlow, output_fn: OutputFn, shape: tuple[int, ...], steps: int, *,
                  generator: torch.Generator | None = None, callback: Callback | None = None,
                  device: torch.device | str | None = None, final: FinalChoice = "sample") -> Tensor:
    """The paper's n-step sampler: Algorithm 3 (continuous), 6 (discretised), 9 (discrete).

    x' ~ p_O(. | theta; t_{i-1}) each step (for continuous data p_O is a point mass at x-hat), then
    y ~ p_S(y | x'; alpha_i) and theta <- h(theta, y, alpha_i); finally a draw from p_O(. | theta; 1).
    """
    return _sample(flow, output_fn, shape, steps, use_mean=False, generator=generator, callback=callback,
                   device=device, final=final)


@torch.no_grad()
def output_mean_sampler(flow: BayesianFlow, output_fn: OutputFn, shape: tuple[int, ...], steps: int, *,
                        generator: torch.Generator | None = None, callback: Callback | None = None,
                        device: torch.device | str | None = None, final: FinalChoice = "sample") -> Tensor:
    """Variant of the paper's sampler that sends the output mean instead of a draw: y ~ p_S(y | E[x']; alpha)
    (k-hat for discretised data, the class probabilities for discrete data). Identical to Algorithm 3 for
    continuous data."""
    return _sample(flow, output_fn, shape, steps, use_mean=True, generator=generator, callback=callback,
                   device=device, final=final)
