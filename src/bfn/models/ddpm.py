"""`DDPM`: the diffusion baseline (Ho et al. 2020) on the same networks, trainer and evaluation as `BFN`.

The network predicts the noise eps from x_t and t (Ho et al. 2020, §3.2) and is trained with L_simple (eq. 14).
Data of every kind are seen as values in [-1, 1]: discrete classes k = 0..K-1 as -1 + 2k / (K - 1) (binarized
{0, 1} -> {-1, +1}), discretized data as their bin centres, continuous data as they are. Likelihoods are the full
variational bound in nats with Ho et al.'s discrete decoder (eq. 13) over the K data values, so that discrete and
discretized bounds are bounds on -ln P(x) and directly comparable with a BFN's.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor, nn

from bfn.config import DDPMConfig
from bfn.data.spec import DataSpec
from bfn.diffusion.gaussian import (
    BinnedGaussian,
    BoundTerms,
    GaussianDiffusion,
    bin_edges,
    importance_bound,
    l_simple,
    step_terms,
    variational_bound,
)
from bfn.errors import ConfigError, DataError
from bfn.models.base import Capabilities, FinalChoice, GenerativeModel, SampleCallback, SampleStep, progress_callback
from bfn.models.layout import Layout, from_network, to_network
from bfn.models.validation import check_data_shape
from bfn.samplers.base import StepInfo
from bfn.samplers.ddpm import ancestral_sampler, ddim_sampler, ddpm_sampler_name
from bfn.utils.binned import bin_centres, class_values
from bfn.utils.steps import parse_steps
from bfn.utils.tensors import rand, randn

DataKind = Literal["continuous", "discretized", "discrete"]


def data_values(kind: str, *, num_classes: int | None = None, num_bins: int | None = None) -> Tensor | None:
    """The K values in [-1, 1] the data take (None for continuous data): -1 + 2k / (K - 1) for K classes (the
    binarized {0, 1} as {-1, +1}), the bin centres (2k + 1) / K - 1 for K bins (Graves et al. 2023, §5)."""
    if kind == "discrete":
        k = num_classes or 2
        if k < 2:
            raise ConfigError(f"discrete data need at least 2 classes, got {k}")
        return class_values(k)
    if kind == "discretized":
        if not num_bins or num_bins < 2:
            raise ConfigError(f"discretized data need num_bins >= 2, got {num_bins}")
        return bin_centres(num_bins, dtype=torch.float64)
    if kind == "continuous":
        return None
    raise ConfigError(f"unknown data kind {kind!r}; expected continuous, discretized or discrete")


class DDPM(GenerativeModel):
    """Denoising diffusion probabilistic model (Ho et al. 2020) with the interface of `bfn.models.BFN`.

    Args:
        network: any module with `forward(x, t, cond=None)` taking one feature per variable and returning one
            (eps_theta), t in (0, 1] being tau / T.
        config: the schedule and variance (`bfn.config.DDPMConfig`; defaults: T = 1000, linear 1e-4..0.02).
        data_kind: "discrete", "discretized" or "continuous".
        data_shape: shape S of one example, e.g. (1, 28, 28).
        num_bins: K for discretized data.
        num_classes: K for discrete data (default 2).
        layout: how [B, *S, 1] reaches the network ("image", "sequence" or "flat").
        num_labels: number of class labels for conditional models (None: unconditional).
    """

    family = "ddpm"

    def __init__(self, network: nn.Module, config: DDPMConfig | None = None, *, data_kind: DataKind,
                 data_shape: tuple[int, ...], num_bins: int | None = None, num_classes: int | None = None,
                 layout: Layout = "flat", num_labels: int | None = None, name: str = "") -> None:
        super().__init__()
        cfg = config or DDPMConfig()
        self.network = network
        self.ddpm_config = cfg
        self.kind = data_kind
        self.layout = layout
        self.num_classes = (num_classes or 2) if data_kind == "discrete" else None
        self.num_bins = num_bins if data_kind == "discretized" else None
        self.data = DataSpec(kind=data_kind, shape=tuple(data_shape), num_classes=self.num_classes,
                             num_bins=self.num_bins, num_labels=num_labels, layout=layout, name=name)
        self.data_shape = self.data.shape
        self.values = data_values(data_kind, num_classes=self.num_classes, num_bins=self.num_bins)
        self.variance: Literal["small", "large"] = cfg.variance
        self.clip_x0 = bool(cfg.clip_x0) and data_kind != "continuous"
        self.diffusion = GaussianDiffusion.from_schedule(cfg.schedule, cfg.timesteps, beta_start=cfg.beta_start,
                                                         beta_end=cfg.beta_end)
        # replaced by models.hub.build_model with the full description for save_pretrained
        self.config: dict[str, Any] = {"data": {"kind": data_kind, "shape": list(self.data_shape),
                                                "num_classes": self.num_classes, "num_bins": self.num_bins}}

    @property
    def capabilities(self) -> Capabilities:
        cond = self.data.num_labels is not None
        return Capabilities(likelihood="bound", conditional=cond, guidance=cond, inpainting=False,
                            samplers=("ancestral", "ddim"), default_steps=self.timesteps, max_steps=self.timesteps,
                            nll_steps=True)

    def networks(self) -> list[nn.Module]:
        return [self.network]

    def training_objective(self) -> str:
        return "L_simple (eps MSE)"

    @property
    def timesteps(self) -> int:
        """T, the number of diffusion steps of training."""
        return self.diffusion.num_train_timesteps

    # --- data <-> [-1, 1] ---------------------------------------------------------------------------------------
    def check_batch(self, x: Tensor) -> Tensor:
        """Validate a data batch (one-line DataError otherwise) and return it as values in [-1, 1], float32."""
        check_data_shape(x, self.data_shape)
        if x.numel() and x.is_floating_point() and not torch.isfinite(x).all():
            raise DataError("data contains NaN or Inf; clean the data")
        if self.kind == "discrete":
            if x.is_floating_point() and not torch.equal(x, x.round()):
                raise DataError("discrete data must hold class indices (integers); got fractional values")
            k = self.num_classes or 2
            if x.numel() and (x.min() < 0 or x.max() >= k):
                raise DataError(f"discrete data must hold class indices in 0..{k - 1}, got {int(x.min())}.."
                                f"{int(x.max())}")
            assert self.values is not None
            return self.values.to(device=x.device, dtype=torch.float32)[x.long()]
        if not x.is_floating_point():
            raise DataError(f"{self.kind} data must be floating point values in [-1, 1], got {x.dtype}")
        if self.kind == "discretized" and x.numel() and (x.min() < -1 or x.max() > 1):
            raise DataError("discretized data must lie in [-1, 1] (bin centres); rescale the data")
        return x.float()

    def value_index(self, x: Tensor) -> Tensor | None:
        """Index of each variable's value among `values` (None for continuous data)."""
        if self.values is None:
            return None
        return torch.bucketize(x.contiguous(), bin_edges(self.values.to(x)))

    def to_data(self, index: Tensor) -> Tensor:
        """Value indices -> the data format: class indices (int64) or bin centres (float32)."""
        if self.kind == "discrete":
            return index.long()
        assert self.values is not None
        return self.values.to(device=index.device, dtype=torch.float32)[index]

    def display(self, v: Tensor) -> Tensor:
        """Values in [-1, 1] -> the display units of `bfn.viz` (class index for discrete data)."""
        if self.kind == "discrete":
            return (v.clamp(-1, 1) + 1) / 2 * ((self.num_classes or 2) - 1)
        return v

    # --- the network --------------------------------------------------------------------------------------------
    def eps(self, x_t: Tensor, i: Tensor, process: GaussianDiffusion, cond: Tensor | None = None,
            guidance: float | None = None) -> Tensor:
        """eps_theta(x_i, tau_i) [B, *S], optionally with classifier-free guidance (Ho & Salimans 2022):
        (1 + w) eps(cond) - w eps(null)."""
        t = process.network_time(i)
        x = to_network(x_t.unsqueeze(-1), self.layout)
        out = self.network(x, t, cond) if cond is not None else self.network(x, t)
        e = from_network(out, self.layout, self.data_shape, 1)[..., 0].float()
        if guidance:
            if cond is None or self.num_labels is None:
                raise ConfigError("guidance needs a class-conditional model and a label (e.g. --label 7); "
                                  "or set guidance to 0")
            null = torch.full_like(cond, self.num_labels)
            e = (1 + guidance) * e - guidance * self.eps(x_t, i, process, null)
        return e

    def denoise(self, x_t: Tensor, i: Tensor, process: GaussianDiffusion, cond: Tensor | None = None,
                guidance: float | None = None) -> Tensor:
        """x0_hat(x_i) from eps_theta (Ho et al. 2020, eq. 4 solved for x_0), clipped to [-1, 1] for discrete and
        discretized data, as in Ho et al.'s sampler; the same model defines the bound."""
        x0 = process.x0_from_eps(x_t, i, self.eps(x_t, i, process, cond, guidance))
        return x0.clamp(-1, 1) if self.clip_x0 else x0

    def process(self, steps: int | str | None = None) -> GaussianDiffusion:
        """The T-step process, or respaced to `steps` < T latents; None, "inf" or steps >= T give all T."""
        n = parse_steps(steps)
        return self.diffusion if n is None else self.diffusion.respace(min(n, self.timesteps))

    # --- training and likelihood ------------------------------------------------------------------------------
    def loss(self, x: Tensor, *, cond: Tensor | None = None, generator: torch.Generator | None = None) -> Tensor:
        """L_simple = ||eps - eps_theta(sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps, t)||^2 summed over
        variables, t ~ U{1..T}, eps ~ N(0, I): Ho et al. 2020, eq. (14) and Algorithm 1; shape [B]."""
        x0 = self.check_batch(x)
        b = x0.shape[0]
        i = 1 + (rand((b,), generator=generator, device=x0.device) * self.timesteps).long().clamp_max(
            self.timesteps - 1)
        noise = randn(x0.shape, generator=generator, device=x0.device)
        x_t = self.diffusion.q_sample(x0, i, noise)
        eps = self.eps(x_t, i, self.diffusion, cond)  # under the caller's autocast (bf16 training); float32 out
        with torch.autocast(device_type=x0.device.type, enabled=False):  # the loss itself in float32
            return l_simple(noise, eps)

    @torch.no_grad()
    def bound_terms(self, x: Tensor, steps: int | str | None = None, *, cond: Tensor | None = None,
                    generator: torch.Generator | None = None, u: Tensor | None = None,
                    importance: bool = False, proposal: Tensor | None = None) -> BoundTerms:
        """Prior, diffusion and decoder terms of the bound (Ho et al. 2020, eq. 5), each [B] nats; see `nll`.
        `importance`: draw the step i from `proposal` (q(i) over i = 2..S; default
        `GaussianDiffusion.step_proposal`) instead of uniformly; unbiased for any q > 0."""
        x0 = self.check_batch(x)
        process = self.process(steps)

        denoise = self._denoiser(process, cond)
        if importance and proposal is None:
            proposal = process.step_proposal(self.variance)
        with torch.autocast(device_type=x0.device.type, enabled=False):
            return variational_bound(process, denoise, x0, values=self.values, index=self.value_index(x0),
                                     variance=self.variance, generator=generator, u=u,
                                     proposal=proposal if importance else None)

    def nll_terms(self, x: Tensor, steps: int | str | None = None, *, cond: Tensor | None = None,
                  generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """One-sample estimate of the variational bound on -ln p(x) in nats per example (Ho et al. 2020, eq. 5):
        {"L_T": the prior term exactly, "L_diffusion": (S - 1) L_{i-1} at one i ~ U{2..S} (the Monte Carlo estimate
        of the sum over all steps), "L_0": the decoder term of eq. (13)}. Averaging repeats averages the estimate.

        `steps`: "inf" (or None, or any count >= T) bounds the trained T-step model; a count S < T bounds the
        S-step model of the respaced process (Nichol & Dhariwal 2021, §4), which is the model that
        `sample(n, S, sampler="ancestral")` draws from, so bounds and samplers at S steps match, as for a BFN.
        """
        terms = self.bound_terms(x, steps, cond=cond, generator=generator)
        return {"L_T": terms.prior, "L_diffusion": terms.diffusion, "L_0": terms.decoder}

    def nll_name(self, steps: int | str | None = None) -> str:
        n = parse_steps(steps)
        if n is None or n >= self.timesteps:
            return f"VLB (T={self.timesteps})"
        return f"VLB ({n}-step respaced)"

    def _denoiser(self, process: GaussianDiffusion, cond: Tensor | None) -> Callable[[Tensor, Tensor], Tensor]:
        def denoise(x_t: Tensor, i: Tensor) -> Tensor:
            c = None if cond is None else torch.cat([cond] * (x_t.shape[0] // cond.shape[0]))
            return self.denoise(x_t, i, process, c)
        return denoise

    @torch.no_grad()
    def nll_pilot(self, x: Tensor, steps: Sequence[int | str], *, cond: Tensor | None = None,
                  generator: torch.Generator | None = None, points: int = 20,
                  uniform_share: float = 0.05) -> dict[int | str, Tensor]:
        """An importance-sampling proposal q(i) over the steps i = 1..S of each bound (i = 1: the decoder term L_0),
        measured on pilot examples `x`: the term L_{i-1} (one draw of x_i per example) at i = 1 and at `points`
        steps log-spaced over 2..S, its root mean square over the examples interpolated log-linearly in ln i to
        every step, normalised, plus `uniform_share` of uniform mass: q(i) ~ sqrt(E L_{i-1}^2), the proposal that
        minimises the variance of the one-step estimate averaged over the examples (e.g. Owen, "Monte Carlo
        theory, methods and examples", §9.1). The analytic `GaussianDiffusion.step_proposal` assumes
        unit-Gaussian data and a perfect denoiser; on binarized MNIST it puts up to 100x too little mass where a
        trained model's terms are (steps 100-600 of 1,000). One network evaluation per example and point."""
        x0 = self.check_batch(x)
        index = self.value_index(x0)
        b = x0.shape[0]
        out: dict[int | str, Tensor] = {}
        for s in steps:
            process = self.process(s)
            n = process.num_steps
            if n < 2:
                continue
            grid = torch.unique(torch.logspace(0, math.log10(n), points + 1, dtype=torch.float64).round())
            rms = []
            with torch.autocast(device_type=x0.device.type, enabled=False):
                for i in grid.tolist():
                    steps_i = torch.full((b,), int(i), dtype=torch.long, device=x0.device)
                    terms = step_terms(process, self._denoiser(process, cond), x0, steps_i, values=self.values,
                                       index=index, variance=self.variance, generator=generator)
                    rms.append(terms.square().mean().sqrt().clamp_min(1e-30).cpu())
            log_rms = torch.stack(rms).log()
            at = torch.arange(1, n + 1, dtype=torch.float64).log()
            profile = torch.from_numpy(np.interp(at.numpy(), grid.log().numpy(), log_rms.numpy())).exp()
            out[s] = (1 - uniform_share) * profile / profile.sum() + uniform_share / n
        return out

    def nll_bounds(self, x: Tensor, steps: Sequence[int | str], *, u: Tensor | None = None,
                   cond: Tensor | None = None, generator: torch.Generator | None = None,
                   strata: int = 16, pilot: Any = None) -> dict[int | str, Tensor]:
        """Lower-variance `nll` for several step counts at once, float64 nats per example [B] each, keyed by step
        count ("inf": all T steps). With a proposal from `nll_pilot` for the step count (`pilot`): the whole sum
        L_0 + ... + L_{S-1}, decoder term included, by importance sampling at two stratified steps per example
        (`importance_bound`; two network evaluations per example, as the plain estimator). Without one: the
        decoder term at its own x_1 and one step i >= 2 from `GaussianDiffusion.step_proposal`. Both unbiased,
        with `u` [B] the uniforms that pick the steps. (`strata` does not apply: every term of the bound is a
        closed-form Gaussian KL given x_i.)"""
        pilot = pilot or {}
        out: dict[int | str, Tensor] = {}
        for s in steps:
            if s in pilot:
                x0 = self.check_batch(x)
                process = self.process(s)
                if u is None:
                    u = rand((x0.shape[0],), generator=generator, device=x0.device)
                with torch.no_grad(), torch.autocast(device_type=x0.device.type, enabled=False):
                    out[s] = importance_bound(process, self._denoiser(process, cond), x0, u, pilot[s],
                                              values=self.values, index=self.value_index(x0),
                                              variance=self.variance, generator=generator)
            else:
                out[s] = self.bound_terms(x, s, cond=cond, generator=generator, u=u, importance=True).total.double()
        return out

    # --- sampling ---------------------------------------------------------------------------------------------
    def decoder(self, x0_hat: Tensor, process: GaussianDiffusion) -> BinnedGaussian | None:
        """p(x_0 | x_1) with mean x0_hat = mu_theta(x_1, 1) (Ho et al. 2020, eq. 13); None for continuous data."""
        if self.values is None:
            return None
        return BinnedGaussian(x0_hat, process.decoder_std(x0_hat), self.values.to(x0_hat))

    @torch.no_grad()
    def sample(self, n: int, steps: int | None = None, *, sampler: str | None = None,
               generator: torch.Generator | None = None, callback: SampleCallback | None = None,
               progress: bool = False, cond: Tensor | int | None = None, guidance: float | None = None,
               final: FinalChoice = "sample", inpaint: tuple[Tensor, Tensor] | None = None,
               eta: float = 0.0) -> Tensor:
        """Draw `n` samples with `steps` network evaluations (default and at most T).

        Samplers: "ancestral" (Ho et al. 2020, Algorithm 2; with steps < T over the respaced timesteps, which is
        DDIM with eta = 1; "paper" is an alias) and "ddim" (Song et al. 2021; `eta` = 0 deterministic).
        `final`: "sample" draws x_0 from the discrete decoder p(x_0 | x_1) (eq. 13), "mode" takes its most likely
        value (x0_hat rounded to the nearest value), "mean" its mean (class probabilities [n, *S, K] for discrete
        data, as a BFN's). Returns data-format samples: class indices (int64) for discrete data, bin centres in
        [-1, 1] for discretized data, x0_hat for continuous data.
        """
        if final not in ("sample", "mode", "mean"):
            raise ConfigError(f"final must be 'sample', 'mode' or 'mean', got {final!r}")
        steps, name, labels = self.check_sample_args(n, steps, None if sampler is None else ddpm_sampler_name(sampler),
                                                     cond, guidance, inpaint)
        process = self.process(steps)
        device = self.device

        def denoise(x_t: Tensor, i: Tensor) -> Tensor:
            return self.denoise(x_t, i, process, labels, guidance)

        shown, close = progress_callback(callback, steps, progress)
        step_cb = None if shown is None else self._step_callback(shown)
        shape = (n, *self.data_shape)
        try:
            if name == "ancestral":
                x0_hat = ancestral_sampler(process, denoise, shape, variance=self.variance, generator=generator,
                                           callback=step_cb, device=device)
            else:
                x0_hat = ddim_sampler(process, denoise, shape, eta=eta, generator=generator, callback=step_cb,
                                      device=device)
        finally:
            close()
        decoder = self.decoder(x0_hat, process)
        if decoder is None:
            return x0_hat
        if final == "mean":
            return decoder.probs if self.kind == "discrete" else decoder.mean
        return self.to_data(decoder.mode if final == "mode" else decoder.sample(generator))

    def _step_callback(self, callback: SampleCallback) -> Any:
        """A sampler callback that hands `callback` x_t and x0_hat in display units (`SampleStep`)."""

        def wrapped(info: StepInfo) -> None:
            callback(SampleStep(i=info.i, n=info.n, t=info.t, estimate=self.display(info.theta),
                                prediction=self.display(info.output), state=info))

        return wrapped


def build(cfg: Any, data: DataSpec) -> DDPM:
    """A DDPM for `data` from a model config (`bfn.config.ModelConfig`): one value x_t in, one eps out per variable,
    whatever the data kind."""
    from bfn.models.hub import default_network

    layout, network = default_network(cfg, data, 1, 1)
    labels = data.num_labels if cfg.conditional else None
    return DDPM(network, cfg.ddpm, data_kind=data.kind, num_bins=data.num_bins, num_classes=data.num_classes,
                data_shape=data.shape, layout=layout, num_labels=labels, name=data.name)
