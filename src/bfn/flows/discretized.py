"""Bayesian flow for discretised data: K equal bins on [-1, 1] (Graves et al. 2023, §5)."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from bfn.errors import ConfigError, DataError
from bfn.flows.continuous import ContinuousFlow, GaussianParams
from bfn.flows.distributions import OFFICIAL_MIN_PROB, DiscretizedGaussian, bin_centres
from bfn.utils.stratified import stratified_normal
from bfn.utils.tensors import append_dims, randn, sum_except_batch


class DiscretizedFlow(ContinuousFlow):
    """Discretised data: the continuous input side (§4) with a discretised-Gaussian output distribution.

    The network emits two values per variable, (mu_eps, ln sigma_eps); they become
    mu_x = mu/gamma - sqrt((1-gamma)/gamma) mu_eps and sigma_x = sqrt((1-gamma)/gamma) exp(ln sigma_eps),
    with (mu_x, sigma_x) = (0, 1) for t < t_min (§5.3, Algorithm 4-6).

    Args:
        official: the official code's numerical guards, for its checkpoints and recipes: ln sigma_eps clipped to
            [-10, 10], sigma_x clamped to [1e-3, 10], and bins of probability below 1e-5 scored by density times
            bin width (`DiscretizedGaussian.log_prob`). Off: the paper's formulas as written.
    """

    kind = "discretized"
    input_features = 1
    output_features = 2

    num_bins: int

    def __init__(self, *, num_bins: int = 16, sigma_1: float = 0.001, t_min: float = 1e-6,
                 official: bool = False) -> None:
        if num_bins < 2:
            raise ConfigError(f"num_bins must be at least 2, got {num_bins}")
        super().__init__(sigma_1=sigma_1, t_min=t_min, x_range=None)
        self.num_bins = int(num_bins)
        self.official = bool(official)
        # bin centres lie 2/K apart: once the noise-to-signal ratio exp(-lambda) is below the half-width 1/K,
        # each value's bin is nearly settled (bfn.samplers.timegrid)
        self.settled_log_snr = math.log(self.num_bins)

    def output_distribution(self, net_out: Tensor, theta: GaussianParams, t: Tensor) -> DiscretizedGaussian:  # type: ignore[override]
        mean = theta.mean
        inv_g, scale = (append_dims(c, mean.ndim).to(mean.dtype) for c in self.x_hat_coefficients(t))
        mu_x = mean * inv_g - scale * net_out[..., 0]
        log_std = net_out[..., 1].clamp(-10, 10) if self.official else net_out[..., 1]
        sigma_x = scale * log_std.exp()
        early = append_dims(t, mean.ndim) < self.t_min
        mu_x = torch.where(early, torch.zeros_like(mu_x), mu_x)
        sigma_x = torch.where(early, torch.ones_like(sigma_x), sigma_x)
        sigma_x = sigma_x.clamp(1e-3, 10) if self.official else sigma_x.clamp_min(1e-10)
        return DiscretizedGaussian(mu_x, sigma_x, self.num_bins, min_prob=OFFICIAL_MIN_PROB if self.official else 0)

    def continuous_time_loss(self, x: Tensor, p_out: DiscretizedGaussian, t: Tensor) -> Tensor:  # type: ignore[override]
        """L^inf(x) = -ln(sigma_1) sigma_1^(-2t) ||x - k-hat(theta, t)||^2 (§5.7)."""
        return self.loss_weight(t).to(x.dtype) * sum_except_batch((x - p_out.mean) ** 2)

    def discrete_time_loss(  # type: ignore[override]
            self, x: Tensor, p_out: DiscretizedGaussian, t: Tensor, n: int, *,
            generator: torch.Generator | None = None, antithetic: bool = False, strata: int = 0) -> Tensor:
        """L^n(x) = n E[ln N(y | x, 1/alpha) - ln sum_k p_O(k) N(y | k_c, 1/alpha)], y ~ N(x, 1/alpha): an
        estimate of n KL(sender || receiver) (§5.6), in float64 log space (no floor on p_O(k)).

        `strata` = 0: one sampled y per variable (training); with `antithetic`, the average of y and its mirror
        image about x. `strata` = M > 0: the expectation over the one-dimensional y from M draws per variable,
        one in each of M equal-probability strata of N(x, 1/alpha) (`bfn.utils.stratified`): still unbiased,
        with far less variance."""
        alpha = append_dims(self.accuracy_between(t, t.double() + 1.0 / n), x.ndim)
        log_p = p_out.log_probs  # float64, no floor
        if strata > 0:
            z = stratified_normal(strata, tuple(x.shape), generator=generator, device=x.device)
            ratio = torch.stack([self._log_ratio(x, log_p, x + alpha.rsqrt() * z[j], alpha) for j in range(strata)])
            return n * sum_except_batch(ratio.mean(0))
        noise = alpha.rsqrt() * randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        ratio = self._log_ratio(x, log_p, x + noise, alpha)
        if antithetic:
            ratio = 0.5 * (ratio + self._log_ratio(x, log_p, x - noise, alpha))
        return n * sum_except_batch(ratio)

    def _log_ratio(self, x: Tensor, log_p: Tensor, y: Tensor, alpha: Tensor) -> Tensor:
        """ln N(y | x, 1/alpha) - ln sum_k p_k N(y | k_c, 1/alpha) per variable (shared constants cancel)."""
        centres = bin_centres(self.num_bins, device=x.device, dtype=log_p.dtype)
        x, y, alpha = x.to(log_p.dtype), y.to(log_p.dtype), alpha.to(log_p.dtype)
        log_sender = -0.5 * alpha * (y - x) ** 2
        log_components = -0.5 * alpha.unsqueeze(-1) * (y.unsqueeze(-1) - centres) ** 2  # [B, *S, K]
        return log_sender - torch.logsumexp(log_components + log_p, dim=-1)

    def reconstruction_loss(self, x: Tensor, p_out: DiscretizedGaussian) -> Tensor:  # type: ignore[override]
        """L^r(x) = -ln p_O(x | theta; 1) (§5.8)."""
        return -sum_except_batch(p_out.log_prob(x))

    def validate(self, x: Tensor) -> None:
        super().validate(x)
        if x.min() < -1 or x.max() > 1:
            raise DataError(f"discretized data must lie in [-1, 1], got values in [{x.min():.4g}, {x.max():.4g}]; "
                            "rescale with x / 127.5 - 1 for 8-bit images")
        centres = bin_centres(self.num_bins, device=x.device, dtype=x.dtype)
        off = (x.unsqueeze(-1) - centres).abs().amin(-1).max()
        if off > 1e-4:
            raise DataError(f"discretized data must sit on the centres of the {self.num_bins} bins "
                            f"(2k+1)/K - 1; a value is {off:.3g} away; map grey level g with bin k = g*K//256")
