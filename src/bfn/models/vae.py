"""Variational autoencoder (Kingma & Welling 2014) with the importance-weighted bound (Burda et al. 2016).

Model: z ~ N(0, I) in `latent_dim` dims, x | z ~ p_theta(x | z): independent Bernoulli pixels for binary data, or,
for discretized data, a Gaussian per pixel integrated over the K bins (bfn.flows.distributions.DiscretizedGaussian,
the same binned Gaussian as the discretized BFN's output distribution). Encoder q_phi(z | x) = N(mu(x), diag s(x)^2).

Bounds on ln p(x), all in nats per example:
- ELBO = E_q[ln p(x | z)] - KL(q(z | x) || p(z)), the KL in closed form (the training objective, `loss` = -ELBO
  with one reparameterised sample);
- IWAE-k = E[ln (1/k) sum_j p(x, z_j) / q(z_j | x)], z_j ~ q iid; ELBO = IWAE-1 <= IWAE-k <= IWAE-(k+1) <= ln p(x)
  (Burda et al. 2016, Theorem 1). `nll(x, steps=k)` returns -IWAE-k (k = 1: -ELBO, with the closed-form KL);
  k may be thousands: the k samples are processed in chunks with a running log-sum-exp.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bfn.data.spec import DataSpec
from bfn.errors import ConfigError
from bfn.flows.distributions import DiscretizedGaussian
from bfn.models.base import Capabilities, FinalChoice, GenerativeModel, SampleCallback, SampleStep
from bfn.models.family_nets import MLP, ConvDecoder, ConvEncoder, image_side, option, pick_arch, unconditional_options
from bfn.utils.steps import parse_steps

OPTIONS = ("latent_dim", "width", "arch", "chunk")
LOG_2PI = math.log(2 * math.pi)


class VAE(GenerativeModel):
    """A VAE on binary (Bernoulli decoder) or discretized (binned Gaussian decoder) data."""

    family = "vae"

    def __init__(self, data: DataSpec, *, latent_dim: int = 32, width: int = 32, arch: str = "auto",
                 chunk: int = 8192) -> None:
        super().__init__()
        if data.kind == "discrete" and data.classes != 2:
            raise ConfigError(f"the VAE models binary or discretized data; this dataset has {data.classes} classes")
        if data.kind == "continuous":
            raise ConfigError("the VAE models binary or discretized data, not continuous data")
        self.data = data
        self.latent_dim = latent_dim
        self.chunk = chunk  # examples x importance samples per decoder pass when k is large
        c = data.shape[0] if len(data.shape) == 3 else 1
        per_pixel = 1 if data.kind == "discrete" else 2  # Bernoulli logit, or Gaussian mean and log-std
        if pick_arch(arch, data.shape) == "conv":
            side = image_side(data.shape) or 4
            self.encoder: nn.Module = ConvEncoder(c, side, 2 * latent_dim, width)
            self.decoder: nn.Module = ConvDecoder(latent_dim, c * per_pixel, side, width)
        else:
            self.encoder = MLP(data.dims, (2 * latent_dim,), width)
            self.decoder = MLP(latent_dim, (per_pixel, *data.shape), width)

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(likelihood="bound", samplers=("ancestral",), nll_steps=True)

    # --- pieces ---------------------------------------------------------------------------------------
    def _input(self, x: Tensor) -> Tensor:
        """Data -> encoder input in [-1, 1]: binary {0, 1} -> {-1, 1}; bin centres as they are."""
        x = x.to(self.decoder_dtype)
        return x * 2 - 1 if self.data.kind == "discrete" else x

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """mu, log sigma of q(z | x), each [B, latent_dim]."""
        h = self.encoder(self._input(x)).view(x.shape[0], 2, self.latent_dim)
        return h[:, 0], h[:, 1].clamp(-8, 4)

    def _decode(self, z: Tensor) -> Tensor:
        out = self.decoder(z)
        if self.data.kind == "discrete":
            return out.view(z.shape[0], *self.data.shape)
        return out.view(z.shape[0], 2, *self.data.shape)  # channels [mean..., log-std...] for conv decoders

    def _dist(self, out: Tensor) -> DiscretizedGaussian:
        return DiscretizedGaussian(out[:, 0], F.softplus(out[:, 1]) + 1e-3, self.data.num_bins or 16)

    def log_px_given_z(self, x: Tensor, z: Tensor) -> Tensor:
        """ln p(x | z) summed over the variables, [B]."""
        out = self._decode(z)
        if self.data.kind == "discrete":
            return -F.binary_cross_entropy_with_logits(out, x.to(out.dtype), reduction="none").flatten(1).sum(1)
        return self._dist(out).log_prob(x).flatten(1).sum(1)

    @property
    def decoder_dtype(self) -> torch.dtype:
        return next(self.decoder.parameters()).dtype

    @staticmethod
    def kl(mu: Tensor, log_s: Tensor) -> Tensor:
        """KL(N(mu, s^2) || N(0, I)) in closed form, [B]."""
        return 0.5 * (mu.square() + (2 * log_s).exp() - 2 * log_s - 1).sum(-1)

    # --- objective and bounds ---------------------------------------------------------------------------
    def loss(self, x: Tensor, *, cond: Tensor | None = None, generator: torch.Generator | None = None) -> Tensor:
        """-ELBO per example (nats), one reparameterised sample of z."""
        terms = self._elbo_terms(self.check_batch(x), generator)
        return terms["reconstruction"] + terms["kl"]

    def _elbo_terms(self, x: Tensor, generator: torch.Generator | None) -> dict[str, Tensor]:
        mu, log_s = self.encode(x)
        eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
        z = mu + log_s.exp() * eps
        return {"reconstruction": -self.log_px_given_z(x, z), "kl": self.kl(mu, log_s)}

    def log_weights(self, x: Tensor, k: int, generator: torch.Generator | None = None) -> Tensor:
        """ln p(x, z_j) - ln q(z_j | x) for k samples z_j ~ q(z | x), [B, k] (for tests and IWAE)."""
        mu, log_s = self.encode(x)
        b = x.shape[0]
        eps = torch.randn((b, k, self.latent_dim), generator=generator, device=mu.device, dtype=mu.dtype)
        z = mu[:, None] + log_s.exp()[:, None] * eps  # [B, k, d]
        log_q = (-0.5 * eps.square() - log_s[:, None] - 0.5 * LOG_2PI).sum(-1)
        log_pz = (-0.5 * z.square() - 0.5 * LOG_2PI).sum(-1)
        xr = x.unsqueeze(1).expand(b, k, *x.shape[1:]).reshape(b * k, *x.shape[1:])
        log_px = self.log_px_given_z(xr, z.reshape(b * k, -1)).view(b, k)
        return log_px + log_pz - log_q

    def iwae(self, x: Tensor, k: int, generator: torch.Generator | None = None) -> Tensor:
        """The IWAE-k bound on ln p(x) [B], the k samples in chunks (running log-sum-exp)."""
        per = max(1, self.chunk // max(1, x.shape[0]))
        acc: Tensor | None = None
        done = 0
        while done < k:
            m = min(per, k - done)
            lw = torch.logsumexp(self.log_weights(x, m, generator), dim=1)
            acc = lw if acc is None else torch.logaddexp(acc, lw)
            done += m
        assert acc is not None  # k >= 1
        return acc - math.log(k)

    def _k(self, steps: int | str | None) -> int:
        """k importance samples from `steps` (None or "inf": 1, the ELBO), through the one step parser."""
        try:
            k = parse_steps(steps)
        except ConfigError:
            raise ConfigError(f"the VAE's nll takes steps = k importance samples (1 = ELBO, e.g. 1000 = IWAE-1000), "
                              f"got {steps!r}") from None
        return 1 if k is None else k

    def nll_terms(self, x: Tensor, steps: int | str | None = None, *, cond: Tensor | None = None,
                  generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """k = steps (default 1): k = 1 gives -ELBO as reconstruction + kl; k > 1 gives -IWAE-k as one term."""
        k = self._k(steps)
        x = self.check_batch(x)
        if k == 1:
            return self._elbo_terms(x, generator)
        return {f"-IWAE-{k}": -self.iwae(x, k, generator)}

    def nll_name(self, steps: int | str | None = None) -> str:
        k = self._k(steps)
        return "-ELBO" if k == 1 else f"-IWAE-{k}"

    # --- sampling ---------------------------------------------------------------------------------------
    @torch.no_grad()
    def sample(self, n: int, steps: int | None = None, *, sampler: str | None = None,
               generator: torch.Generator | None = None, callback: SampleCallback | None = None,
               progress: bool = False, cond: Tensor | int | None = None, guidance: float | None = None,
               final: FinalChoice = "sample", inpaint: tuple[Tensor, Tensor] | None = None) -> Tensor:
        """Ancestral sampling: z ~ N(0, I), then x ~ p(x | z) ("sample"), its mode or its mean; one decoder pass
        (`steps` is ignored); the callback is called once."""
        self.check_sample_args(n, steps, sampler, cond, guidance, inpaint)
        z = torch.randn((n, self.latent_dim), generator=generator, device=self.device, dtype=self.decoder_dtype)
        out = self._decode(z)
        if self.data.kind == "discrete":
            p = out.sigmoid()
            mean = p
            x = {"sample": lambda: torch.bernoulli(p, generator=generator).long(),
                 "mode": lambda: (p > 0.5).long(), "mean": lambda: p}[final]()
        else:
            dist = self._dist(out)
            mean = dist.mean
            x = {"sample": lambda: dist.sample(generator), "mode": lambda: dist.mode, "mean": lambda: mean}[final]()
        if callback is not None:
            callback(SampleStep(i=1, n=1, t=1.0, estimate=x, prediction=mean))
        return x


def build(cfg: Any, data: DataSpec) -> VAE:
    """A VAE from `cfg.options`: latent_dim (32), width (32 channels), arch (auto/conv/mlp), chunk (8192)."""
    opts = unconditional_options(cfg, OPTIONS, "vae", "the VAE")
    return VAE(data, latent_dim=option(opts, "latent_dim", 32, int, low=1),  # type: ignore[arg-type]
               width=option(opts, "width", 32, int, low=8),  # type: ignore[arg-type]
               arch=option(opts, "arch", "auto", str),  # type: ignore[arg-type]
               chunk=option(opts, "chunk", 8192, int, low=1))  # type: ignore[arg-type]
