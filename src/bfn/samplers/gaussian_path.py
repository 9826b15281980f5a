"""The Gaussian diffusion hidden inside a Bayesian flow (Xue et al. 2024, "Unifying Bayesian Flow Networks and
Diffusion Models through Stochastic Differential Equations", ICML).

Under the Bayesian flow distribution the sampler's state z_t is a linear Gaussian corruption of the data,

    z_t = a_t x0 + s_t eps,   eps ~ N(0, I),

so every few-step diffusion solver written for (a_t, s_t) applies, with the network's output mean as the
data prediction x0-hat:

* continuous and discretised data (Graves et al. 2023, §4.4): z = mu, the input mean, with
  a_t = gamma(t) and s_t = sqrt(gamma(t) (1 - gamma(t))), x0 = x (x-hat, or k-hat for discretised data);
* discrete data (§6.7): z = y, the input logits, with a_t = beta(t) and s_t = sqrt(K beta(t)),
  x0 = K e_x - 1 (estimated by K e-hat - 1, e-hat the output class probabilities).

In both cases the half log signal-to-noise ratio lambda_t = ln(a_t / s_t) = 0.5 ln(beta(t) / c), with c = 1 for
continuous data (gamma / (1 - gamma) = beta) and c = K for discrete data; lambda increases with t, from -inf at
t = 0, so reading BFN time backwards is a valid (variance-preserving-like) forward diffusion.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from bfn.errors import ConfigError
from bfn.flows.base import BayesianFlow
from bfn.utils.tensors import randn


@dataclass(frozen=True)
class GaussianPath:
    """Signal a_t, noise s_t and log-SNR lambda_t of a flow's input parameters, plus the conversions between
    the flow's theta and the solver state z (see the module docstring). Every data-type-specific formula is the
    flow's own (`BayesianFlow.path_signal_noise`, `state_theta`, `state_target`, ...): this class only turns
    times into accuracies and back.

    Args:
        flow: any `BayesianFlow`.
    """

    flow: BayesianFlow

    def __post_init__(self) -> None:
        if not isinstance(self.flow, BayesianFlow):
            raise ConfigError(f"BFN solvers need a BayesianFlow, got {type(self.flow).__name__}")

    # --- schedule (float64 scalars: one time for the whole batch) ----------------------------------------
    def beta(self, t: float) -> float:
        return float(self.flow.beta(torch.tensor(t, dtype=torch.float64)))

    def signal(self, t: float) -> float:
        """a_t."""
        return self.flow.path_signal_noise(self.beta(t))[0]

    def noise(self, t: float) -> float:
        """s_t."""
        return self.flow.path_signal_noise(self.beta(t))[1]

    def log_snr(self, t: float) -> float:
        """lambda_t = ln(a_t / s_t); -inf at t = 0."""
        return self.flow.path_log_snr(self.beta(t))

    def time_at(self, lam: float) -> float:
        """The time t in [0, 1] with lambda_t = lam (bisection on the monotone schedule, any beta(t))."""
        lo, hi = 0.0, 1.0
        if lam >= self.log_snr(1.0):
            return 1.0
        for _ in range(60):
            mid = 0.5 * (lo + hi)
            if self.log_snr(mid) < lam:
                lo = mid
            else:
                hi = mid
        return 0.5 * (lo + hi)

    # --- state <-> theta ---------------------------------------------------------------------------------
    def state_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        return self.flow.state_shape(shape)

    def initial(self, shape: tuple[int, ...], t: float, *, generator: torch.Generator | None,
                device: torch.device | str | None) -> Tensor:
        """z_t ~ N(a_t x0-bar, s_t^2 I) with the prior guess x0-bar = 0 (the flows' own convention: x-hat = 0
        before t_min, and uniform class probabilities give K/K - 1 = 0). At t = 0 this is the prior theta_0."""
        s_t = self.noise(t)
        if s_t == 0:  # no draw, so that the random stream matches the paper's samplers
            return torch.zeros(self.state_shape(shape), device=device)
        return s_t * randn(self.state_shape(shape), generator=generator, device=device)

    def theta(self, z: Tensor, t: float) -> Any:
        """Input parameters for the network at time t."""
        return self.flow.state_theta(z, self.beta(t))

    def data_draw(self, output: Any, generator: torch.Generator | None) -> Tensor:
        """x0 drawn from p_O, in the state's format."""
        return self.flow.state_target(output, draw=True, generator=generator)

    def data_estimate(self, output: Any) -> Tensor:
        """x0-hat from p_O, in the state's format."""
        return self.flow.state_target(output)
