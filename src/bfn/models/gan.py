"""GAN (Goodfellow et al. 2014, non-saturating generator loss) and WGAN-GP (Gulrajani et al. 2017): DCGAN-sized
generator and critic (Radford et al. 2016). They have no likelihood: `nll` raises a one-line ConfigError; evaluate
them by sample quality only.

Data: binary pixels. The generator outputs pixel probabilities p = sigmoid(g(z)); the critic sees 2p - 1 for fakes
and 2x - 1 for the (dynamically binarized) data; `sample` returns a Bernoulli draw of p ("sample"), p > 1/2
("mode") or p ("mean"). Discretized data: the generator outputs values in [-1, 1] (tanh) and `sample` rounds them
to the nearest bin centre.

Training inside bfn's ordinary trainer (one AdamW over all parameters, `zero_grad(set_to_none=True)`): `loss`
alternates updates with a step counter kept as a float buffer (`step`, saved with the weights, so a resumed run
continues the cycle). Of every `n_critic + 1` trainer steps, the first `n_critic` are critic steps (the fakes are
drawn without a graph, so the generator's parameters get no gradient) and the last is a generator step (the critic
is applied through `torch.func.functional_call` with detached parameters, so the critic's parameters get no
gradient). Parameters without a gradient keep `grad = None`, and AdamW skips them: each step updates one network
only. The per-example loss returned is the critic's or the generator's, by step (not a likelihood).

Objectives per example (the critic's output d(x), a real number):
- GAN: critic softplus(-d(x)) + softplus(d(g(z))) (= -ln sigmoid(d(x)) - ln(1 - sigmoid(d(g(z))))),
  generator softplus(-d(g(z))) (the non-saturating loss, Goodfellow et al. 2014, §3);
- WGAN-GP: critic d(g(z)) - d(x) + lambda (||grad d(x_hat)||_2 - 1)^2 with x_hat = e x + (1 - e) g(z),
  e ~ U[0, 1] per example (Gulrajani et al. 2017, Algorithm 1); generator -d(g(z)).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from bfn.data.spec import DataSpec
from bfn.errors import ConfigError
from bfn.models.base import Capabilities, FinalChoice, GenerativeModel, SampleCallback, SampleStep
from bfn.models.family_nets import (
    MLP,
    ConvDecoder,
    ConvEncoder,
    ScalarHead,
    image_side,
    option,
    pick_arch,
    unconditional_options,
)

OPTIONS = ("latent_dim", "width", "arch", "n_critic", "gp_weight")


def gradient_penalty(critic: nn.Module, real: Tensor, fake: Tensor, eps: Tensor) -> Tensor:
    """(||grad_x d(x_hat)||_2 - 1)^2 per example [B] at x_hat = eps real + (1 - eps) fake, eps [B] (Gulrajani et
    al. 2017, eq. 3); differentiable in the critic's parameters (create_graph)."""
    shape = (-1,) + (1,) * (real.ndim - 1)
    x_hat = (eps.view(shape) * real + (1 - eps.view(shape)) * fake).detach().requires_grad_(True)
    d = critic(x_hat)
    (grad,) = torch.autograd.grad(d.sum(), x_hat, create_graph=True)
    return (grad.flatten(1).norm(dim=1) - 1).square()


class GAN(GenerativeModel):
    """Generator and critic trained adversarially; `objective` "gan" (non-saturating) or "wgan-gp"."""

    family = "gan"
    step: Tensor

    def __init__(self, data: DataSpec, *, objective: str = "gan", latent_dim: int = 64, width: int = 32,
                 arch: str = "auto", n_critic: int = 1, gp_weight: float = 10.0) -> None:
        super().__init__()
        if data.kind == "continuous" or (data.kind == "discrete" and data.classes != 2):
            raise ConfigError("the GANs here model binary pixels or discretized data")
        if objective not in ("gan", "wgan-gp"):
            raise ConfigError(f"objective must be gan or wgan-gp, got {objective!r}")
        self.data = data
        self.objective = objective
        self.latent_dim = latent_dim
        self.n_critic = n_critic
        self.gp_weight = gp_weight
        c = data.shape[0] if len(data.shape) == 3 else 1
        if pick_arch(arch, data.shape) == "conv":
            side = image_side(data.shape) or 4
            self.generator: nn.Module = ConvDecoder(latent_dim, c, side, 2 * width)
            self.critic: nn.Module = ScalarHead(ConvEncoder(c, side, 1, width, norm=True))
        else:
            self.generator = MLP(latent_dim, data.shape, 4 * width, depth=2)
            self.critic = ScalarHead(MLP(data.dims, (1,), 4 * width, depth=2))
        self.register_buffer("step", torch.zeros(()))  # float: the training EMA averages float buffers only

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(likelihood="none", samplers=("generator",))

    def networks(self) -> list[nn.Module]:
        return [self.generator, self.critic]

    # --- pieces ---------------------------------------------------------------------------------------
    def _generate(self, z: Tensor) -> Tensor:
        """Critic-format fakes in [-1, 1]: 2 sigmoid - 1 for binary data (= tanh(g / 2)), tanh for bins."""
        out = self.generator(z)
        return torch.tanh(out / 2) if self.data.kind == "discrete" else torch.tanh(out)

    def _real(self, x: Tensor) -> Tensor:
        return x.float() * 2 - 1 if self.data.kind == "discrete" else x.float()

    def critic_step(self, step: float | None = None) -> bool:
        """Whether trainer step `step` (default: the counter) updates the critic (else the generator)."""
        s = int(self.step.item()) if step is None else int(step)
        return s % (self.n_critic + 1) < self.n_critic

    def critic_loss(self, real: Tensor, fake: Tensor, eps: Tensor | None = None) -> Tensor:
        """The critic's loss per example [B] (real and fake in critic format)."""
        d_real, d_fake = self.critic(real), self.critic(fake)
        if self.objective == "gan":
            return F.softplus(-d_real) + F.softplus(d_fake)
        if eps is None:
            eps = torch.rand(real.shape[0], device=real.device)
        return d_fake - d_real + self.gp_weight * gradient_penalty(self.critic, real, fake, eps)

    def generator_loss(self, fake: Tensor) -> Tensor:
        """The generator's loss per example [B], through the critic with detached (gradient-free) parameters."""
        params = {k: v.detach() for k, v in self.critic.named_parameters()}
        d_fake = functional_call(self.critic, params, (fake,))
        return F.softplus(-d_fake) if self.objective == "gan" else -d_fake

    def loss(self, x: Tensor, *, cond: Tensor | None = None, generator: torch.Generator | None = None) -> Tensor:
        """This trainer step's loss [B]: the critic's (n_critic of every n_critic + 1 steps) or the generator's."""
        real = self._real(self.check_batch(x))
        z = torch.randn((x.shape[0], self.latent_dim), generator=generator, device=real.device)
        critic_turn = self.critic_step()
        if self.training and torch.is_grad_enabled():
            self.step += 1
        if critic_turn:
            with torch.no_grad():
                fake = self._generate(z)
            return self.critic_loss(real, fake)
        return self.generator_loss(self._generate(z))

    # --- sampling -----------------------------------------------------------------------------------------
    @torch.no_grad()
    def sample(self, n: int, steps: int | None = None, *, sampler: str | None = None,
               generator: torch.Generator | None = None, callback: SampleCallback | None = None,
               progress: bool = False, cond: Tensor | int | None = None, guidance: float | None = None,
               final: FinalChoice = "sample", inpaint: tuple[Tensor, Tensor] | None = None) -> Tensor:
        """x = g(z), z ~ N(0, I): one generator pass (`steps` is ignored); the callback is called once."""
        self.check_sample_args(n, steps, sampler, cond, guidance, inpaint)
        z = torch.randn((n, self.latent_dim), generator=generator, device=self.device)
        v = self._generate(z)
        if self.data.kind == "discrete":
            p = (v + 1) / 2
            mean = p
            x = {"sample": lambda: torch.bernoulli(p, generator=generator).long(),
                 "mode": lambda: (p > 0.5).long(), "mean": lambda: p}[final]()
        else:
            k = self.data.num_bins or 16
            mean = v
            x = ((((v + 1) * k / 2 - 0.5).round().clamp(0, k - 1)) * 2 + 1) / k - 1 if final != "mean" else v
        if callback is not None:
            callback(SampleStep(i=1, n=1, t=1.0, estimate=x, prediction=mean))
        return x


def _build(cfg: Any, data: DataSpec, objective: str, n_critic: int, cls: type[GAN] | None = None) -> GAN:
    opts = unconditional_options(cfg, OPTIONS, objective, f"the {objective} model")
    return (cls or GAN)(data, objective=objective, latent_dim=option(opts, "latent_dim", 64, int, low=1),  # type: ignore
               width=option(opts, "width", 32, int, low=8),  # type: ignore[arg-type]
               arch=option(opts, "arch", "auto", str),  # type: ignore[arg-type]
               n_critic=option(opts, "n_critic", n_critic, int, low=1),  # type: ignore[arg-type]
               gp_weight=option(opts, "gp_weight", 10.0, float, low=0.0))  # type: ignore[arg-type]


def build_gan(cfg: Any, data: DataSpec) -> GAN:
    """A GAN from `cfg.options`: latent_dim (64), width (32), arch (auto/conv/mlp), n_critic (1)."""
    return _build(cfg, data, "gan", 1)


class WGANGP(GAN):
    """WGAN-GP: the GAN module with the Wasserstein objective and gradient penalty."""

    family = "wgan-gp"


def build_wgan_gp(cfg: Any, data: DataSpec) -> GAN:
    """A WGAN-GP from `cfg.options`: latent_dim (64), width (32), arch, n_critic (5), gp_weight (10)."""
    return _build(cfg, data, "wgan-gp", 5, WGANGP)
