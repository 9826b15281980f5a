"""The interface every Bayesian flow implements (Graves et al. 2023, §3).

A flow holds the math of one data type and nothing else: no network, no device state, no I/O. Tensors carry a
batch dim first; per-example times `t` have shape [B]; losses are per example, in nats, shape [B].
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import torch
from torch import Tensor

from bfn.errors import DataError


class BayesianFlow(ABC):
    """Abstract Bayesian flow: input distribution, sender, Bayesian update, output distribution and losses."""

    #: features per data variable that the network sees (F) and emits (G)
    input_features: int
    output_features: int
    kind: str
    #: K of discrete data (classes) and of discretised data (bins); None where it does not apply
    num_classes: int | None = None
    num_bins: int | None = None

    # --- accuracy schedule -------------------------------------------------------------------------------
    @abstractmethod
    def beta(self, t: Tensor) -> Tensor:
        """Accuracy schedule beta(t), the total accuracy received by time t (beta(0) = 0)."""

    def accuracy(self, i: Tensor | int, n: int) -> Tensor:
        """Accuracy alpha_i = beta(i/n) - beta((i-1)/n) of step i of n (Graves et al. 2023, eq. for alpha_i
        in §4.5, §5.5, §6.5)."""
        i_t = torch.as_tensor(i, dtype=torch.float64)
        return (self.beta(i_t / n) - self.beta((i_t - 1) / n)).float()

    def accuracy_between(self, t: Tensor, t_next: Tensor) -> Tensor:
        """Accuracy received between times t and t_next, beta(t_next) - beta(t)."""
        return self.beta(t_next) - self.beta(t)

    # --- input side --------------------------------------------------------------------------------------
    @abstractmethod
    def prior(self, shape: tuple[int, ...], *, device: torch.device | str | None = None) -> Any:
        """Input-distribution parameters theta_0 for a batch of data shape `shape` = (B, *S)."""

    @abstractmethod
    def flow_sample(self, x: Tensor, t: Tensor, *, generator: torch.Generator | None = None) -> Any:
        """theta ~ p_F(theta | x; t), the Bayesian flow distribution (the network's training input)."""

    @abstractmethod
    def net_input(self, theta: Any, t: Tensor) -> Tensor:
        """What the network sees for variable-wise parameters theta: shape [B, *S, F]."""

    @abstractmethod
    def sender(self, x: Tensor, alpha: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
        """y ~ p_S(y | x; alpha), the sender distribution."""

    @abstractmethod
    def update(self, theta: Any, y: Tensor, alpha: Tensor) -> Any:
        """theta' = h(theta, y, alpha), the Bayesian update function."""

    # --- output side -------------------------------------------------------------------------------------
    @abstractmethod
    def output_distribution(self, net_out: Tensor, theta: Any, t: Tensor) -> Any:
        """p_O(. | theta; t) from the network output [B, *S, G]."""

    @abstractmethod
    def continuous_time_loss(self, x: Tensor, p_out: Any, t: Tensor) -> Tensor:
        """L^inf(x) at time t, per example [B]."""

    @abstractmethod
    def discrete_time_loss(self, x: Tensor, p_out: Any, t: Tensor, n: int, *,
                           generator: torch.Generator | None = None, strata: int = 0) -> Tensor:
        """n-step loss L^n(x) for a step starting at t = (i-1)/n, per example [B]: an unbiased estimate of
        n KL(sender || receiver), from one sender draw (`strata` = 0, training) or averaged over `strata`
        stratified draws where the flow has no closed form (evaluation)."""

    @abstractmethod
    def reconstruction_loss(self, x: Tensor, p_out: Any) -> Tensor:
        """L^r(x) = -ln p_O(x | theta; 1) per example [B] (p_out computed at t = 1)."""

    # --- the data this flow models -----------------------------------------------------------------------
    def as_data(self, x: Tensor) -> Tensor:
        """A validated batch in this flow's data dtype (float32 values; discrete flows: int64 classes)."""
        return x.float()

    def input_summary(self, theta: Any) -> Tensor:
        """Per-variable summary of input parameters theta for pictures, [B, *S]: the input mean mu."""
        return theta.mean.float()

    def output_summary(self, p_out: Any) -> Tensor:
        """Per-variable summary of p_O for pictures, [B, *S]: its mean (x-hat, k-hat)."""
        return p_out.mean.float()

    # --- the Gaussian-path view used by the fast solvers (Xue et al. 2024) ---------------------------------
    # Under p_F the sampler's state z (the input mean, or the input logits) is z_t = a_t x0 + s_t eps, so any
    # diffusion solver applies; each flow says what z, a_t, s_t and x0 are for its data type.
    @abstractmethod
    def path_signal_noise(self, beta: float) -> tuple[float, float]:
        """(a_t, s_t) of z_t = a_t x0 + s_t eps at accuracy beta = beta(t) (Python floats, float64)."""

    @abstractmethod
    def path_log_snr(self, beta: float) -> float:
        """lambda_t = ln(a_t / s_t) at accuracy beta = beta(t); -inf at beta = 0."""

    @abstractmethod
    def state_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        """Shape of the solver state z for data of shape `shape` = (B, *S)."""

    @abstractmethod
    def state_theta(self, z: Tensor, beta: float) -> Any:
        """The input parameters theta that the state z at accuracy beta stands for (what the network sees)."""

    @abstractmethod
    def state_target(self, output: Any, draw: bool = False,
                     generator: torch.Generator | None = None) -> Tensor:
        """x0 in the state's format from p_O: its mean (x0-hat), or with `draw` a draw from it."""

    #: largest |x0|^2 per variable in the state's format (sets how early a solver's grid may start)
    max_state_norm2: float = 1.0
    #: lambda beyond which the data's values are settled (a solver may stop evaluating there), None: never
    settled_log_snr: float | None = None

    # --- observations (inpainting) -------------------------------------------------------
    @abstractmethod
    def observe(self, theta: Any, known: Tensor, mask: Tensor) -> Any:
        """theta with the variables where `mask` [B, *S] is true known exactly (the alpha -> infinity limit of
        the Bayesian update) at the values `known`."""

    # --- validation --------------------------------------------------------------------------------------
    @abstractmethod
    def validate(self, x: Tensor) -> None:
        """Raise a one-line DataError when x is not valid data for this flow."""

    def _validate_batch(self, x: Tensor) -> None:
        if not isinstance(x, Tensor):
            raise DataError(f"expected a torch.Tensor of data, got {type(x).__name__}")
        if x.ndim < 2:
            raise DataError(f"data must have a batch dim and at least one data dim, got shape {tuple(x.shape)}; "
                            "use x.unsqueeze(-1) for scalar data")
        if x.numel() == 0:
            raise DataError(f"the data batch is empty (shape {tuple(x.shape)}); give at least one example")
        if x.is_complex():
            raise DataError(f"data must be real numbers, got {x.dtype}")

