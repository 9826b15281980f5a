"""The DDPM baseline's math (Ho et al. 2020): schedules, forward process, posterior, L_simple and the full bound.

No networks and no device state here, as in `bfn.flows`; `bfn.models.ddpm.DDPM` glues it to a network and
`bfn.samplers.ddpm` samples from it.
"""

from bfn.diffusion.gaussian import (
    BinnedGaussian,
    BoundTerms,
    GaussianDiffusion,
    binned_gaussian_log_probs,
    cosine_betas,
    decoder_nll,
    l_simple,
    linear_betas,
    make_betas,
    normal_kl,
    respaced_timesteps,
    variational_bound,
)

__all__ = ["BinnedGaussian", "BoundTerms", "GaussianDiffusion", "binned_gaussian_log_probs", "cosine_betas",
           "decoder_nll", "l_simple", "linear_betas", "make_betas", "normal_kl", "respaced_timesteps",
           "variational_bound"]
