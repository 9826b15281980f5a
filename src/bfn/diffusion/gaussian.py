"""Gaussian diffusion (Ho et al. 2020, "Denoising Diffusion Probabilistic Models", arXiv 2006.11239): schedules,
the forward process, its posterior, the eps <-> x0 conversions, L_simple and the full variational bound in nats.

Conventions. Index i = 0 .. S of a `GaussianDiffusion` counts the steps of the process it describes: i = 0 is the
data x_0 (alpha_bar_0 = 1), i = S the last latent. A process built from a schedule has S = T and index i is the
paper's t; a *respaced* process (Nichol & Dhariwal 2021, §4; the DDIM sub-sequence of Song et al. 2021) keeps the
latents x_{tau_1}, ..., x_{tau_S} of T-step training, tau_1 = 1 < ... < tau_S = T, with alpha_bar'_i =
alpha_bar_{tau_i} and beta'_i = 1 - alpha_bar'_i / alpha_bar'_{i-1}. Every formula below then holds with primes, so
one object serves training (S = T), the full bound, and few-step samplers and bounds.

The object is plain math: it holds float64 CPU tensors, no network and no device state; each method takes indices
i [B] and data tensors, gathers its coefficients and moves them to the data's device and dtype.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from bfn.errors import ConfigError
from bfn.utils.binned import bin_edges, binned_gaussian_log_probs
from bfn.utils.tensors import append_dims, rand, randn, sum_except_batch

ScheduleName = Literal["linear", "cosine"]
#: reverse-process variance sigma_i^2: "small" = beta-tilde_i (the posterior variance), "large" = beta_i
#: (Ho et al. 2020, §3.2: "both sigma_t^2 = beta_t and sigma_t^2 = beta-tilde_t had similar results")
Variance = Literal["small", "large"]

LOG_2PI = math.log(2 * math.pi)


# --- schedules --------------------------------------------------------------------------------------------------
def linear_betas(timesteps: int, *, beta_start: float = 1e-4, beta_end: float = 0.02) -> Tensor:
    """beta_1 .. beta_T rising linearly (Ho et al. 2020, §4: 1e-4 to 0.02 for T = 1000), float64 [T].

    `beta_start` and `beta_end` are the values for T = 1000 and are scaled by 1000 / T, as in Nichol & Dhariwal
    2021's `get_named_beta_schedule`, so that alpha_bar_T stays near zero for any T.
    """
    check_timesteps(timesteps)
    scale = 1000.0 / timesteps
    return torch.linspace(beta_start * scale, min(beta_end * scale, 0.999), timesteps, dtype=torch.float64)


def cosine_betas(timesteps: int, *, s: float = 0.008, max_beta: float = 0.999) -> Tensor:
    """The cosine schedule (Nichol & Dhariwal 2021, eq. 17): alpha_bar_t = f(t) / f(0), f(t) = cos^2(pi/2 (t/T + s)
    / (1 + s)), beta_t = min(1 - alpha_bar_t / alpha_bar_{t-1}, 0.999); float64 [T]."""
    check_timesteps(timesteps)
    t = torch.arange(timesteps + 1, dtype=torch.float64) / timesteps
    f = torch.cos((t + s) / (1 + s) * math.pi / 2) ** 2
    return (1 - f[1:] / f[:-1]).clamp(max=max_beta)


def make_betas(schedule: ScheduleName, timesteps: int, *, beta_start: float = 1e-4, beta_end: float = 0.02) -> Tensor:
    """The named beta schedule, float64 [T]."""
    if schedule == "linear":
        if not 0 < beta_start <= beta_end < 1:
            raise ConfigError(f"model.ddpm needs 0 < beta_start <= beta_end < 1, got {beta_start} and {beta_end}")
        return linear_betas(timesteps, beta_start=beta_start, beta_end=beta_end)
    if schedule == "cosine":
        return cosine_betas(timesteps)
    raise ConfigError(f"unknown model.ddpm.schedule {schedule!r}; choose linear or cosine")


def check_timesteps(timesteps: int) -> int:
    if isinstance(timesteps, bool) or not isinstance(timesteps, int) or timesteps < 1:
        raise ConfigError(f"model.ddpm.timesteps must be a positive integer, got {timesteps!r}")
    return timesteps


def respaced_timesteps(timesteps: int, steps: int) -> list[int]:
    """`steps` evenly spaced timesteps tau_1 = 1 < ... < tau_S = T of a T-step process (tau = [T] for one step)."""
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ConfigError(f"steps must be a positive integer, got {steps!r}")
    if steps > timesteps:
        raise ConfigError(f"a DDPM trained with T = {timesteps} steps takes at most {timesteps} sampling steps, "
                          f"got {steps}")
    if steps == 1:
        return [timesteps]
    # spacing (T - 1) / (S - 1) >= 1, so rounding keeps the S values distinct
    return [round(1 + j * (timesteps - 1) / (steps - 1)) for j in range(steps)]


# --- elementwise Gaussian helpers -------------------------------------------------------------------------------
def normal_kl(mean1: Tensor, var1: Tensor, mean2: Tensor, var2: Tensor) -> Tensor:
    """KL(N(mean1, var1) || N(mean2, var2)) per element, in nats (broadcasting)."""
    return 0.5 * (torch.log(var2) - torch.log(var1) + (var1 + (mean1 - mean2) ** 2) / var2 - 1)


def gaussian_log_density(x: Tensor, mean: Tensor, std: Tensor) -> Tensor:
    """ln N(x; mean, std^2) per element (the decoder for continuous data)."""
    return -0.5 * (((x - mean) / std) ** 2 + LOG_2PI) - torch.log(std)


@dataclass
class BinnedGaussian:
    """The decoder p(x_0 | x_1) over K data values (Ho et al. 2020, eq. 13): N(mean, std^2) integrated over the bins
    around each value, the edge bins extended to infinity.

    Args:
        mean_x: mu_theta(x_1, 1), shape [B, *S].
        std: sigma_1, broadcastable to `mean_x`.
        values: the K data values in [-1, 1], ascending.
    """

    mean_x: Tensor
    std: Tensor
    values: Tensor

    @property
    def log_probs(self) -> Tensor:
        """ln P(k) per variable and value, [B, *S, K]."""
        return binned_gaussian_log_probs(self.mean_x, self.std, self.values)

    @property
    def probs(self) -> Tensor:
        """P(k) in the mean's dtype, [B, *S, K]."""
        return self.log_probs.exp().to(self.mean_x.dtype)

    @property
    def mean(self) -> Tensor:
        """The expected data value sum_k P(k) v_k, [B, *S]."""
        return (self.probs * self.values.to(self.mean_x)).sum(-1)

    @property
    def mode(self) -> Tensor:
        """Index of the most probable value, [B, *S]."""
        return self.log_probs.argmax(-1)

    def log_prob(self, index: Tensor) -> Tensor:
        """ln P(x_0) per variable for value indices [B, *S], float64, no floor (a bound stays a bound)."""
        return self.log_probs.gather(-1, index.long().unsqueeze(-1)).squeeze(-1)

    def sample(self, generator: torch.Generator | None = None) -> Tensor:
        """Value indices [B, *S] drawn by inverting the CDF with one uniform each."""
        cdf = self.probs.cumsum(-1)
        u = rand(cdf.shape[:-1] + (1,), generator=generator, device=cdf.device, dtype=cdf.dtype)
        return (u * cdf[..., -1:] > cdf).sum(-1).clamp_max(cdf.shape[-1] - 1)


# --- the process ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class GaussianDiffusion:
    """A Gaussian diffusion process q(x_{1:S} | x_0) over S steps (Ho et al. 2020, §2).

    Args:
        alpha_bar: float64 [S + 1], alpha_bar[0] = 1 (the data), decreasing.
        timesteps: int64 [S + 1], the training timestep of each index (timesteps[0] = 0); the network sees
            timesteps[i] / num_train_timesteps.
        num_train_timesteps: T of the process the network was trained on.
    """

    alpha_bar: Tensor
    timesteps: Tensor
    num_train_timesteps: int

    @classmethod
    def from_betas(cls, betas: Tensor) -> GaussianDiffusion:
        """The T-step process of betas [T]: alpha_bar_t = prod_{s <= t} (1 - beta_s) (Ho et al. 2020, §2)."""
        betas = betas.double().cpu()
        if betas.ndim != 1 or not ((betas > 0) & (betas < 1)).all():
            raise ConfigError("betas must be a 1-D tensor with values in (0, 1)")
        alpha_bar = torch.cat([torch.ones(1, dtype=torch.float64), torch.cumprod(1 - betas, 0)])
        return cls(alpha_bar, torch.arange(len(betas) + 1), len(betas))

    @classmethod
    def from_schedule(cls, schedule: ScheduleName, timesteps: int, *, beta_start: float = 1e-4,
                      beta_end: float = 0.02) -> GaussianDiffusion:
        return cls.from_betas(make_betas(schedule, timesteps, beta_start=beta_start, beta_end=beta_end))

    @property
    def num_steps(self) -> int:
        """S, the number of latents (= network evaluations of a sampler over this process)."""
        return len(self.alpha_bar) - 1

    @property
    def betas(self) -> Tensor:
        """beta_i = 1 - alpha_bar_i / alpha_bar_{i-1}, float64 [S] (index i - 1 holds beta_i)."""
        return 1 - self.alpha_bar[1:] / self.alpha_bar[:-1]

    def respace(self, steps: int) -> GaussianDiffusion:
        """The S-step process on `respaced_timesteps(T, S)` of this T-step one (itself when S = T)."""
        if self.num_steps != self.num_train_timesteps:
            raise ConfigError("respace a process built from its schedule, not an already respaced one")
        tau = respaced_timesteps(self.num_train_timesteps, steps)
        if len(tau) == self.num_steps:
            return self
        idx = torch.tensor([0, *tau])
        return GaussianDiffusion(self.alpha_bar[idx], idx, self.num_train_timesteps)

    def _at(self, values: Tensor, i: Tensor, like: Tensor) -> Tensor:
        """float64 coefficients [S + 1] gathered at indices i [B], cast to `like` and shaped to broadcast [B, 1..]."""
        return append_dims(values[i.cpu()].to(device=like.device, dtype=like.dtype), like.ndim)

    def marginal(self, i: Tensor, like: Tensor) -> tuple[Tensor, Tensor]:
        """sqrt(alpha_bar_i) and 1 - alpha_bar_i at indices i [B] (i = 0 gives 1 and 0), shaped like `like`."""
        return self._at(self.alpha_bar.sqrt(), i, like), self._at(1 - self.alpha_bar, i, like)

    def network_time(self, i: Tensor) -> Tensor:
        """What the network sees of index i: tau_i / T in (0, 1], float32 [B]."""
        return self.timesteps[i.cpu()].float().to(i.device) / self.num_train_timesteps

    def q_mean_variance(self, x0: Tensor, i: Tensor) -> tuple[Tensor, Tensor]:
        """Mean sqrt(alpha_bar_i) x_0 and variance 1 - alpha_bar_i of q(x_i | x_0) (Ho et al. 2020, eq. 4)."""
        return self._at(self.alpha_bar.sqrt(), i, x0) * x0, self._at(1 - self.alpha_bar, i, x0).expand_as(x0)

    def q_sample(self, x0: Tensor, i: Tensor, noise: Tensor) -> Tensor:
        """x_i = sqrt(alpha_bar_i) x_0 + sqrt(1 - alpha_bar_i) eps (Ho et al. 2020, eq. 4 reparameterised, §3.2)."""
        return self._at(self.alpha_bar.sqrt(), i, x0) * x0 + self._at((1 - self.alpha_bar).sqrt(), i, x0) * noise

    def posterior_mean_variance(self, x0: Tensor, x_t: Tensor, i: Tensor) -> tuple[Tensor, Tensor]:
        """Mean mu-tilde_i(x_i, x_0) and variance beta-tilde_i of q(x_{i-1} | x_i, x_0) for i >= 1 (Ho et al.
        2020, eqs. 6-7):
        mu-tilde = sqrt(alpha_bar_{i-1}) beta_i / (1 - alpha_bar_i) x_0 + sqrt(alpha_i) (1 - alpha_bar_{i-1}) /
        (1 - alpha_bar_i) x_i, beta-tilde = (1 - alpha_bar_{i-1}) / (1 - alpha_bar_i) beta_i."""
        ab, ab_prev = self.alpha_bar[1:], self.alpha_bar[:-1]
        beta = 1 - ab / ab_prev
        c0 = ab_prev.sqrt() * beta / (1 - ab)
        ct = (1 - beta).sqrt() * (1 - ab_prev) / (1 - ab)
        var = (1 - ab_prev) / (1 - ab) * beta
        j = i - 1
        mean = self._at(c0, j, x0) * x0 + self._at(ct, j, x_t) * x_t
        return mean, self._at(var, j, x0).expand_as(x0)

    def reverse_variance(self, i: Tensor, like: Tensor, variance: Variance = "small") -> Tensor:
        """sigma_i^2 of p_theta(x_{i-1} | x_i) for i >= 2: beta-tilde_i ("small") or beta_i ("large")."""
        beta = self.betas
        if variance == "small":
            beta = beta * (1 - self.alpha_bar[:-1]) / (1 - self.alpha_bar[1:])
        elif variance != "large":
            raise ConfigError(f"model.ddpm.variance must be 'small' or 'large', got {variance!r}")
        return self._at(beta, i - 1, like).expand_as(like)

    def step_proposal(self, variance: Variance = "small", *, uniform_share: float = 0.05) -> Tensor:
        """Importance-sampling distribution q(i) over the steps i = 2..S of the bound's sum, float64 [S - 1] (index
        i - 2), shaped like the terms themselves: w_i = c_i^2 v_i / (2 sigma_i^2), the expected L_{i-1} of the
        Bayes-optimal denoiser for unit-variance Gaussian data (c_i = sqrt(alpha_bar_{i-1}) beta_i / (1 -
        alpha_bar_i), the x_0 coefficient of mu-tilde, eq. 7; v_i = 1 - alpha_bar_i, the posterior variance of x_0).
        For trained models on [-1, 1] data the terms follow w_i within a small factor from i = 2 to ~0.6 S, where
        the uniform choice of i misses the largest terms; `uniform_share` of uniform mass keeps every weight 1/q(i)
        below (S - 1) / uniform_share. Any q > 0 keeps the estimate unbiased."""
        ab, ab_prev = self.alpha_bar[1:], self.alpha_bar[:-1]
        beta = 1 - ab / ab_prev
        c = ab_prev.sqrt() * beta / (1 - ab)
        sigma2 = beta * (1 - ab_prev) / (1 - ab) if variance == "small" else beta
        w = (c**2 * (1 - ab) / (2 * sigma2))[1:]  # steps i = 2..S
        return (1 - uniform_share) * w / w.sum() + uniform_share / len(w)

    def decoder_std(self, like: Tensor) -> Tensor:
        """sigma_1 of the decoder p(x_0 | x_1): sqrt(beta_1) = sqrt(1 - alpha_bar_1) (Ho et al. 2020, eq. 13),
        a scalar tensor on `like`'s device (beta'_1 = 1 - alpha_bar_{tau_1} of a respaced process)."""
        return (1 - self.alpha_bar[1]).sqrt().to(device=like.device, dtype=like.dtype)

    def x0_from_eps(self, x_t: Tensor, i: Tensor, eps: Tensor) -> Tensor:
        """x_0 = (x_i - sqrt(1 - alpha_bar_i) eps) / sqrt(alpha_bar_i) (Ho et al. 2020, eq. 4 solved for x_0)."""
        return (x_t - self._at((1 - self.alpha_bar).sqrt(), i, x_t) * eps) / self._at(self.alpha_bar.sqrt(), i, x_t)

    def eps_from_x0(self, x_t: Tensor, i: Tensor, x0: Tensor) -> Tensor:
        """eps = (x_i - sqrt(alpha_bar_i) x_0) / sqrt(1 - alpha_bar_i) (Ho et al. 2020, eq. 4 solved for eps)."""
        return (x_t - self._at(self.alpha_bar.sqrt(), i, x_t) * x0) / self._at((1 - self.alpha_bar).sqrt(), i, x_t)

    def prior_kl(self, x0: Tensor) -> Tensor:
        """L_T = KL(q(x_S | x_0) || N(0, I)) per example, in nats [B] (Ho et al. 2020, eq. 5), float64:
        per variable 0.5 (ab x_0^2 - ab - ln(1 - ab)) with ab = alpha_bar_S, in a form without cancellation."""
        ab = float(self.alpha_bar[-1])
        per_var = 0.5 * (ab * (x0.double() ** 2 - 1) - math.log1p(-ab))
        return sum_except_batch(per_var)


# --- losses -----------------------------------------------------------------------------------------------------
def l_simple(eps: Tensor, eps_hat: Tensor) -> Tensor:
    """L_simple = ||eps - eps_theta(x_t, t)||^2 per example, summed over variables [B] (Ho et al. 2020, eq. 14)."""
    return sum_except_batch((eps - eps_hat) ** 2)


#: (x_i [B, *S], i [B]) -> predicted x_0 [B, *S]
Denoiser = Callable[[Tensor, Tensor], Tensor]


@dataclass
class BoundTerms:
    """The variational bound of Ho et al. 2020, eq. (5), per example in nats, each [B]:
    prior L_T, diffusion sum_{i=2}^{S} L_{i-1} (a one-sample Monte Carlo estimate) and decoder L_0."""

    prior: Tensor
    diffusion: Tensor
    decoder: Tensor

    @property
    def total(self) -> Tensor:
        return self.prior + self.diffusion + self.decoder


def decoder_nll(x0: Tensor, x0_hat: Tensor, std: Tensor, *, values: Tensor | None,
                index: Tensor | None = None) -> Tensor:
    """L_0 = -ln p(x_0 | x_1) per example [B]: the binned decoder of eq. (13) when `values` (K data values) are
    given, with x_0 given by its value `index`; a Gaussian density N(x_0; x0_hat, std^2) for continuous data."""
    if values is None:
        return -sum_except_batch(gaussian_log_density(x0, x0_hat, std))
    if index is None:
        index = torch.bucketize(x0.contiguous(), bin_edges(values.to(x0)))
    return -sum_except_batch(BinnedGaussian(x0_hat, std, values).log_prob(index))


def variational_bound(process: GaussianDiffusion, denoise: Denoiser, x0: Tensor, *, values: Tensor | None,
                      index: Tensor | None = None, variance: Variance = "small",
                      generator: torch.Generator | None = None, u: Tensor | None = None,
                      proposal: Tensor | None = None) -> BoundTerms:
    """One-sample estimate of the bound -ln p(x_0) <= L_T + sum_{i=2}^{S} L_{i-1} + L_0 (Ho et al. 2020, eq. 5):

    - L_T = KL(q(x_S | x_0) || N(0, I)), exact;
    - sum_{i=2}^{S} KL(q(x_{i-1} | x_i, x_0) || p_theta(x_{i-1} | x_i)) = (S - 1) E_{i ~ U{2..S}} L_{i-1}, one i
      and one x_i ~ q(x_i | x_0) per example (eqs. 6-8; p_theta has mean mu-tilde(x_i, x0_hat) and variance
      sigma_i^2);
    - L_0 = -ln p_theta(x_0 | x_1) with x_1 ~ q(x_1 | x_0), the binned decoder of eq. (13) (a density for
      continuous data).

    The two network evaluations run as one batch of 2B. Args: `process` (T steps, or respaced to S), `denoise`
    (x_i, i) -> x0_hat, `x0` [B, *S] in [-1, 1], `values` the K data values (None: continuous), `index` the value
    index of each variable (found from x0 when None), `variance` of p_theta, `u` [B] the uniforms that pick i
    (default: fresh; evaluation passes uniforms stratified across the test examples),
    `proposal` q(i) over i = 2..S [S - 1] (e.g. `GaussianDiffusion.step_proposal`): i is drawn from q by inverting
    its CDF at u and the sum is estimated as L_{i-1} / q(i), still unbiased (default: uniform, (S - 1) L_{i-1}).
    """
    b = x0.shape[0]
    s = process.num_steps
    device = x0.device
    ones = torch.ones(b, dtype=torch.long, device=device)
    if s >= 2:
        if u is None:
            u = rand((b,), generator=generator, device=device)
        if proposal is None:
            i = 2 + (u.to(device) * (s - 1)).long().clamp_max(s - 2)  # uniform on {2, ..., S}
            weight = torch.full((b,), float(s - 1), dtype=torch.float64, device=device)
        else:
            q = proposal.to(device=device, dtype=torch.float64)
            cdf = q.cumsum(0)
            k = torch.searchsorted(cdf, u.to(device=device, dtype=torch.float64) * cdf[-1], right=True)
            k = k.clamp_max(s - 2)
            i, weight = 2 + k, 1 / q[k]
    else:
        i = ones
    noise = randn((2 * b, *x0.shape[1:]), generator=generator, device=device, dtype=x0.dtype)
    both_i = torch.cat([ones, i])
    x_t = process.q_sample(torch.cat([x0, x0]), both_i, noise)
    x0_hat = denoise(x_t, both_i)
    decoder = decoder_nll(x0, x0_hat[:b], process.decoder_std(x0), values=values, index=index)
    if s >= 2:
        mean_q, var_q = process.posterior_mean_variance(x0, x_t[b:], i)
        mean_p, _ = process.posterior_mean_variance(x0_hat[b:], x_t[b:], i)
        kl = sum_except_batch(normal_kl(mean_q, var_q, mean_p, process.reverse_variance(i, x0, variance)))
        diffusion = weight * kl.double()
    else:
        diffusion = torch.zeros(b, device=device, dtype=x0.dtype)
    return BoundTerms(prior=process.prior_kl(x0), diffusion=diffusion, decoder=decoder)


def step_terms(process: GaussianDiffusion, denoise: Denoiser, x0: Tensor, i: Tensor, *, values: Tensor | None,
               index: Tensor | None = None, variance: Variance = "small",
               generator: torch.Generator | None = None) -> Tensor:
    """The terms L_{i-1} of the bound (Ho et al. 2020, eq. 5) at one step i [B] in 1..S per example, float64 [B],
    with one network evaluation per example: for i >= 2, KL(q(x_{i-1} | x_i, x_0) || p_theta(x_{i-1} | x_i)) at one
    x_i ~ q(x_i | x_0) (eqs. 6-8); for i = 1, the decoder term L_0 = -ln p_theta(x_0 | x_1) of eq. (13)."""
    if index is None and values is not None:
        index = torch.bucketize(x0.contiguous(), bin_edges(values.to(x0)))
    noise = randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
    x_t = process.q_sample(x0, i, noise)
    x0_hat = denoise(x_t, i)
    out = torch.empty(x0.shape[0], dtype=torch.float64, device=x0.device)
    first = i == 1
    if first.any():
        out[first] = decoder_nll(x0[first], x0_hat[first], process.decoder_std(x0), values=values,
                                 index=None if index is None else index[first]).double()
    later = ~first
    if later.any():
        j, xs, xt = i[later], x0[later], x_t[later]
        mean_q, var_q = process.posterior_mean_variance(xs, xt, j)
        mean_p, _ = process.posterior_mean_variance(x0_hat[later], xt, j)
        out[later] = sum_except_batch(normal_kl(mean_q, var_q, mean_p,
                                                process.reverse_variance(j, xs, variance))).double()
    return out


def importance_bound(process: GaussianDiffusion, denoise: Denoiser, x0: Tensor, u: Tensor, proposal: Tensor, *,
                     values: Tensor | None, index: Tensor | None = None, variance: Variance = "small",
                     generator: torch.Generator | None = None, draws: int = 2) -> Tensor:
    """Estimate of the whole bound L_T + sum_{i=1}^{S} L_{i-1} (Ho et al. 2020, eq. 5; L_0 the decoder term) per
    example, float64 [B], from `draws` steps per example drawn by importance sampling, the decoder term included
    in the sum: with q = `proposal` over i = 1..S [S] (index i - 1) and its inverse CDF Q, the steps are
    i_k = Q((k + u) / draws), k = 0 .. draws - 1 (one per stratum of the CDF, each uniform given `u` ~ U(0, 1)
    [B]), and sum_i L_{i-1} ~= sum_k L_{i_k - 1} / (draws q(i_k)), unbiased for any q > 0. `draws` network
    evaluations per example."""
    b = x0.shape[0]
    q = proposal.to(device=x0.device, dtype=torch.float64)
    if q.shape != (process.num_steps,):
        raise ValueError(f"proposal has shape {tuple(q.shape)}; expected ({process.num_steps},) over steps 1..S")
    q = q / q.sum()
    cdf = q.cumsum(0)
    estimate = torch.zeros(b, dtype=torch.float64, device=x0.device)
    for stratum in range(draws):  # one network call of B rows per draw: large batches run slower per row on CPU
        v = (stratum + u.to(device=x0.device, dtype=torch.float64)) / draws
        k = torch.searchsorted(cdf, v, right=True).clamp_max(process.num_steps - 1)
        terms = step_terms(process, denoise, x0, k + 1, values=values, index=index, variance=variance,
                           generator=generator)
        estimate += terms / q[k] / draws
    return process.prior_kl(x0).double() + estimate
