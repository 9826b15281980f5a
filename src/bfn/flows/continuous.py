"""Bayesian flow for continuous data (Graves et al. 2023, §4)."""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

from bfn.errors import ConfigError, DataError
from bfn.flows.base import BayesianFlow
from bfn.flows.distributions import OFFICIAL_MIN_PROB, DiscretizedGaussian, PointMass
from bfn.utils.tensors import append_dims, randn, sum_except_batch

#: largest |x| the continuous flow accepts: far beyond any sensible scaling (data should be about [-1, 1]) and
#: far below where float32 losses overflow (~1e15 / sqrt(dims) at sigma_1 = 0.001)
MAX_MAGNITUDE = 1e6


class GaussianParams(NamedTuple):
    """Input distribution N(mean, 1/precision) per variable; precision is per example, shape [B]."""

    mean: Tensor
    precision: Tensor


class ContinuousFlow(BayesianFlow):
    """Continuous data with the schedule beta(t) = sigma_1^(-2t) - 1 (§4.5).

    Args:
        sigma_1: standard deviation of the input distribution at t = 1.
        t_min: below this time the network's estimate is replaced by 0 (Algorithm 1-3, `t_min`).
        x_range: clip x-hat into this interval (the paper's [x_min, x_max]); None to disable.
        recon_bins: for data that are really K bins on [-1, 1] (e.g. 8-bit images): score the reconstruction
            with a Gaussian N(x-hat, recon_std^2) discretised to those bins, so that the bound is a code length
            of the discrete data and comparable with a discretised BFN (§7.2 of the paper); None: the density.
        recon_std: the std of that Gaussian (None: sigma_1; the official 16-bin CIFAR-10 recipe uses
            0.7 sigma_1).
        official: score bins of probability below 1e-5 by density times bin width, as the official code does.
    """

    kind = "continuous"
    input_features = 1
    output_features = 1

    def __init__(self, *, sigma_1: float = 0.001, t_min: float = 1e-6,
                 x_range: tuple[float, float] | None = (-1.0, 1.0), recon_bins: int | None = None,
                 recon_std: float | None = None, official: bool = False) -> None:
        if not 0 < sigma_1 < 1:
            raise ConfigError(f"sigma_1 must lie in (0, 1), got {sigma_1}")
        if recon_bins is not None and recon_bins < 2:
            raise ConfigError(f"recon_bins must be at least 2 (or None), got {recon_bins}")
        if recon_std is not None and not recon_std > 0:
            raise ConfigError(f"recon_std must be positive (or None for sigma_1), got {recon_std}")
        self.sigma_1 = float(sigma_1)
        self.t_min = float(t_min)
        self.x_range = tuple(x_range) if x_range is not None else None
        self.recon_bins = recon_bins
        self.recon_std = float(recon_std) if recon_std is not None else self.sigma_1
        self.official = bool(official)

    # --- schedule ---------------------------------------------------------------------------------------
    # Computed in float64 from ln(sigma_1), in expm1 form: at sigma_1 = 1e-6, t -> 1 the float32 1 - sigma_1^(2t)
    # keeps no digit of 1 - gamma = sigma_1^(2t); here both gamma and 1 - gamma keep ~15.
    def beta(self, t: Tensor) -> Tensor:
        """beta(t) = sigma_1^(-2t) - 1 = expm1(-2t ln sigma_1) (§4.5), float64."""
        return torch.expm1(-2 * math.log(self.sigma_1) * t.double())

    def gamma(self, t: Tensor) -> Tensor:
        """gamma(t) = beta(t) / (1 + beta(t)) = 1 - sigma_1^(2t) = -expm1(2t ln sigma_1) (§4.5), float64."""
        return -torch.expm1(2 * math.log(self.sigma_1) * t.double())

    def one_minus_gamma(self, t: Tensor) -> Tensor:
        """1 - gamma(t) = sigma_1^(2t) = exp(2t ln sigma_1), float64 (no cancellation near t = 1)."""
        return torch.exp(2 * math.log(self.sigma_1) * t.double())

    def accuracy_between(self, t: Tensor, t_next: Tensor) -> Tensor:
        """beta(t_next) - beta(t) = sigma_1^(-2t) expm1(-2 (t_next - t) ln sigma_1), float64."""
        t, t_next = t.double(), t_next.double()
        log_s = math.log(self.sigma_1)
        return torch.exp(-2 * log_s * t) * torch.expm1(-2 * log_s * (t_next - t))

    def loss_weight(self, t: Tensor) -> Tensor:
        """-ln(sigma_1) sigma_1^(-2t), the weight of L^inf (§4.11), float64."""
        return -math.log(self.sigma_1) * torch.exp(-2 * math.log(self.sigma_1) * t.double())

    def x_hat_coefficients(self, t: Tensor) -> tuple[Tensor, Tensor]:
        """1/gamma and sqrt((1 - gamma)/gamma), float64 (gamma floored at 1e-12 for t -> 0, where x-hat is 0)."""
        g = self.gamma(t).clamp_min(1e-12)
        return 1 / g, (self.one_minus_gamma(t) / g).sqrt()

    def noise_scale(self, t: Tensor, ndim: int) -> tuple[Tensor, Tensor]:
        """(gamma, sqrt((1 - gamma)/gamma)) broadcast to `ndim` dims, with 1 - gamma = sigma_1^(2t) computed
        directly: 1 - gamma from gamma would lose most of its float32 digits near t = 1 (1 - gamma ~ 1e-6), which
        the loss weight sigma_1^(-2t) then amplifies."""
        var = append_dims(self.sigma_1 ** (2 * t), ndim)
        g = (1 - var).clamp_min(1e-12)
        return g, (var / g).sqrt()

    # --- input side -------------------------------------------------------------------------------------
    def prior(self, shape: tuple[int, ...], *, device: torch.device | str | None = None) -> GaussianParams:
        """theta_0 = (mu_0, rho_0) = (0, 1) (§4.1)."""
        return GaussianParams(torch.zeros(shape, device=device), torch.ones(shape[0], device=device))

    def flow_sample(self, x: Tensor, t: Tensor, *, generator: torch.Generator | None = None) -> GaussianParams:
        """mu ~ p_F(mu | x; t) = N(gamma x, gamma (1 - gamma) I), rho = 1 + beta(t) (§4.4)."""
        g = append_dims(self.gamma(t), x.ndim)
        std = (g * append_dims(self.one_minus_gamma(t), x.ndim)).sqrt()
        eps = randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        mean = g.to(x.dtype) * x + std.to(x.dtype) * eps
        return GaussianParams(mean, (1 + self.beta(t)).to(x.dtype))

    def net_input(self, theta: GaussianParams, t: Tensor) -> Tensor:
        return theta.mean.unsqueeze(-1)

    def sender(self, x: Tensor, alpha: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
        """y ~ p_S(y | x; alpha) = N(x, alpha^-1 I) (§4.2)."""
        std = append_dims(alpha, x.ndim).rsqrt()
        return x + std * randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)

    def update(self, theta: GaussianParams, y: Tensor, alpha: Tensor) -> GaussianParams:
        """rho' = rho + alpha, mu' = (mu rho + y alpha) / rho' (§4.1, Bayesian update function)."""
        alpha = alpha.expand_as(theta.precision)
        rho = theta.precision + alpha
        a, r0, r1 = (append_dims(v, y.ndim) for v in (alpha, theta.precision, rho))
        return GaussianParams((theta.mean * r0 + y * a) / r1, rho)

    # --- Gaussian path, data format, observations (see BayesianFlow) --------------------------------------
    def path_signal_noise(self, beta: float) -> tuple[float, float]:
        """z = mu: a_t = gamma = beta / (1 + beta), s_t = sqrt(gamma (1 - gamma)) = sqrt(beta) / (1 + beta) (§4.4)."""
        return beta / (1 + beta), math.sqrt(beta) / (1 + beta)

    def path_log_snr(self, beta: float) -> float:
        """lambda_t = 0.5 ln(gamma / (1 - gamma)) = 0.5 ln beta(t)."""
        return 0.5 * math.log(beta) if beta > 0 else -math.inf

    def state_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        return tuple(shape)

    def state_theta(self, z: Tensor, beta: float) -> GaussianParams:
        """theta = (mu = z, rho = 1 + beta)."""
        return GaussianParams(z, torch.full((z.shape[0],), 1 + beta, device=z.device, dtype=z.dtype))

    def state_target(self, output: PointMass, draw: bool = False,
                     generator: torch.Generator | None = None) -> Tensor:
        """x-hat (k-hat for discretised data), or a draw from p_O."""
        return output.sample(generator) if draw else output.mean

    def observe(self, theta: GaussianParams, known: Tensor, mask: Tensor) -> GaussianParams:
        """mu = x_obs where observed (rho -> infinity there, eq. 56)."""
        return theta._replace(mean=torch.where(mask, known.to(theta.mean.dtype), theta.mean))

    # --- output side ------------------------------------------------------------------------------------
    def x_hat(self, eps_hat: Tensor, mean: Tensor, t: Tensor) -> Tensor:
        """x-hat = mu/gamma - sqrt((1-gamma)/gamma) eps-hat, 0 for t < t_min, clipped (§4.3)."""
        inv_g, scale = (append_dims(c, mean.ndim).to(mean.dtype) for c in self.x_hat_coefficients(t))
        x = mean * inv_g - scale * eps_hat
        x = torch.where(append_dims(t, mean.ndim) < self.t_min, torch.zeros_like(x), x)
        if self.x_range is not None:
            x = x.clamp(*self.x_range)
        return x

    def output_distribution(self, net_out: Tensor, theta: GaussianParams, t: Tensor) -> PointMass:
        return PointMass(self.x_hat(net_out[..., 0], theta.mean, t))

    def continuous_time_loss(self, x: Tensor, p_out: PointMass, t: Tensor) -> Tensor:
        """L^inf(x) = -ln(sigma_1) sigma_1^(-2t) ||x - x-hat(theta, t)||^2 (§4.11)."""
        return self.loss_weight(t).to(x.dtype) * sum_except_batch((x - p_out.mean) ** 2)

    def discrete_time_loss(self, x: Tensor, p_out: PointMass, t: Tensor, n: int, *,
                           generator: torch.Generator | None = None, strata: int = 0) -> Tensor:
        """L^n(x) = n (1 - sigma_1^(2/n)) / (2 sigma_1^(2i/n)) ||x - x-hat(theta, t_{i-1})||^2, with
        t = (i-1)/n: the closed-form Gaussian KL of sender and receiver times n (§4.10); exact in y, so
        `strata` (sender draws, see the other flows) has nothing to do here."""
        alpha = self.accuracy_between(t, t.double() + 1.0 / n)
        return n * alpha / 2 * sum_except_batch((x - p_out.mean) ** 2).double()

    def reconstruction_loss(self, x: Tensor, p_out: PointMass) -> Tensor:
        """L^r(x) = -ln N(x | x-hat(theta, 1), sigma_1^2 I) (§4.12); with `recon_bins`, minus the log probability
        of x's bin under N(x-hat, recon_std^2) discretised to those bins (tails in the end bins)."""
        if self.recon_bins is not None:
            std = torch.full_like(p_out.mean, self.recon_std)
            binned = DiscretizedGaussian(p_out.mean, std, self.recon_bins,
                                         min_prob=OFFICIAL_MIN_PROB if self.official else 0.0)
            return -sum_except_batch(binned.log_prob(x))
        var = self.sigma_1**2
        nll = 0.5 * (x - p_out.mean) ** 2 / var + 0.5 * math.log(2 * math.pi * var)
        return sum_except_batch(nll)

    def validate(self, x: Tensor) -> None:
        self._validate_batch(x)
        if not x.is_floating_point():
            raise DataError(f"continuous data must be a float tensor, got {x.dtype}")
        if not torch.isfinite(x).all():
            raise DataError("continuous data contains NaN or Inf; clean or drop those examples")
        biggest = x.abs().max().item() if x.numel() else 0.0
        if biggest > MAX_MAGNITUDE:
            raise DataError(f"continuous data has values up to {biggest:.3g}; the continuous flow assumes data "
                            "scaled to about [-1, 1] (sigma_1 is relative to that scale), so standardise it first, "
                            "e.g. 2 * (x - min) / (max - min) - 1")
        if self.x_range is not None:
            lo, hi = self.x_range
            x_min, x_max = float(x.min()), float(x.max())
            if x_min < lo or x_max > hi:
                raise DataError(f"continuous data has values in [{x_min:.4g}, {x_max:.4g}], outside the range "
                                f"[{lo:g}, {hi:g}] that the model's output x-hat can reach (model.flow.x_range), so "
                                "no network could fit it; rescale the data into it, e.g. 2 * (x - min) / (max - min)"
                                " - 1, or set model.flow.x_range=[lo,hi] to cover the data")
