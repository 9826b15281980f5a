"""Samplers of the DDPM baseline: Ho et al. 2020's ancestral sampler and DDIM (Song et al. 2021), over a
`GaussianDiffusion` (all T training steps, or respaced to fewer) and a denoiser callable (x_i, i) -> x0_hat.

Both walk i = S, S-1, ..., 1, evaluate the denoiser once per step (S evaluations in all) and return the prediction
x0_hat at i = 1, which is the decoder mean mu_theta(x_1, 1) (for i = 1, mu-tilde(x_1, x0_hat) = x0_hat since
alpha_bar_0 = 1). The model turns that into data (a draw from the discrete decoder, its mode or its mean).

`callback(StepInfo(i, n, t, theta, output))` is called once per step with the step number i = 1..S in sampling
order, the progress t = 1 - tau_i / T in [0, 1) (increasing, as a BFN's time), theta = x_{tau_i} and
output = x0_hat.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from bfn.diffusion.gaussian import Denoiser, GaussianDiffusion, Variance
from bfn.errors import ConfigError
from bfn.samplers.base import Callback, StepInfo
from bfn.utils.tensors import randn

#: (x_i, i, x0_hat, generator) -> x_{i-1}
Step = Callable[[Tensor, Tensor, Tensor, torch.Generator | None], Tensor]


def _loop(process: GaussianDiffusion, denoise: Denoiser, shape: tuple[int, ...], step: Step, *,
          generator: torch.Generator | None, callback: Callback | None, device: torch.device | str | None) -> Tensor:
    x = randn(shape, generator=generator, device=device)  # x_S ~ N(0, I)
    s, big_t = process.num_steps, process.num_train_timesteps
    for idx in range(s, 0, -1):
        i = torch.full((shape[0],), idx, dtype=torch.long, device=x.device)
        x0_hat = denoise(x, i)
        if callback is not None:
            t = 1 - int(process.timesteps[idx]) / big_t
            callback(StepInfo(i=s - idx + 1, n=s, t=t, theta=x, output=x0_hat))
        if idx == 1:
            return x0_hat
        x = step(x, i, x0_hat, generator)
    raise AssertionError("unreachable: a process has at least one step")


@torch.no_grad()
def ancestral_sampler(process: GaussianDiffusion, denoise: Denoiser, shape: tuple[int, ...], *,
                      variance: Variance = "small", generator: torch.Generator | None = None,
                      callback: Callback | None = None, device: torch.device | str | None = None) -> Tensor:
    """Ancestral sampling, Ho et al. 2020, Algorithm 2: x_{i-1} = mu-tilde_i(x_i, x0_hat) + sigma_i z (eqs. 6-7,
    11), sigma_i^2 = beta-tilde_i ("small") or beta_i ("large"); x_0 = mu_theta(x_1, 1) without noise.

    Over a respaced process it is the respaced sampler of Nichol & Dhariwal 2021 (§4), which for "small" equals
    DDIM with eta = 1. Returns x0_hat at the last step, [*shape].
    """

    def step(x: Tensor, i: Tensor, x0_hat: Tensor, generator: torch.Generator | None) -> Tensor:
        mean, _ = process.posterior_mean_variance(x0_hat, x, i)
        std = process.reverse_variance(i, x, variance).sqrt()
        return mean + std * randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)

    return _loop(process, denoise, shape, step, generator=generator, callback=callback, device=device)


@torch.no_grad()
def ddim_sampler(process: GaussianDiffusion, denoise: Denoiser, shape: tuple[int, ...], *, eta: float = 0.0,
                 generator: torch.Generator | None = None, callback: Callback | None = None,
                 device: torch.device | str | None = None) -> Tensor:
    """DDIM, Song et al. 2021, eq. (12): x_{i-1} = sqrt(alpha_bar_{i-1}) x0_hat + sqrt(1 - alpha_bar_{i-1} -
    sigma_i^2) eps_hat + sigma_i z, with sigma_i^2 = eta^2 beta-tilde_i (eq. 16) and eps_hat recomputed from the
    (clipped) x0_hat. eta = 0 is deterministic; eta = 1 is the ancestral sampler with sigma^2 = beta-tilde.
    Returns x0_hat at the last step, [*shape]."""
    if not eta >= 0:
        raise ConfigError(f"eta must be >= 0, got {eta}")

    def step(x: Tensor, i: Tensor, x0_hat: Tensor, generator: torch.Generator | None) -> Tensor:
        eps_hat = process.eps_from_x0(x, i, x0_hat)
        sqrt_ab_prev, one_minus_prev = process.marginal(i - 1, x)
        sigma2 = eta**2 * process.reverse_variance(i, x, "small")
        out = sqrt_ab_prev * x0_hat + (one_minus_prev - sigma2).clamp_min(0).sqrt() * eps_hat
        if eta > 0:
            out = out + sigma2.sqrt() * randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        return out

    return _loop(process, denoise, shape, step, generator=generator, callback=callback, device=device)


#: DDPM sampler names; "paper" is the sampler of the DDPM paper (Ho et al. 2020, Algorithm 2), i.e. "ancestral"
DDPM_SAMPLERS: dict[str, str] = {
    "ancestral": "Ho et al. 2020, Algorithm 2 (stochastic; respaced to fewer steps as DDIM with eta = 1)",
    "ddim": "DDIM, Song et al. 2021 (eta = 0: deterministic; pass eta for stochastic variants)",
}
ALIASES = {"paper": "ancestral"}


def ddpm_sampler_name(name: str) -> str:
    """The canonical DDPM sampler name for `name` (ConfigError for an unknown one)."""
    name = ALIASES.get(name, name)
    if name not in DDPM_SAMPLERS:
        raise ConfigError(f"unknown DDPM sampler {name!r}; choose one of {', '.join(DDPM_SAMPLERS)}")
    return name
