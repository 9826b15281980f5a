"""RealNVP normalizing flow (Dinh et al. 2017) with uniform dequantization, as a generative model of discrete
pixels. (Not to be confused with the Bayesian flows of `bfn.flows`.)

Data: each variable takes one of K levels k (binary pixels: K = 2; K bins of discretized data). Uniform
dequantization: y = (k + u) / K with u ~ U[0, 1)^D, a density on [0, 1)^D. The logit transform
s = logit(a + (1 - 2a) y) (a = 0.05, Dinh et al. 2017, §4.1) maps y to R^D, then affine coupling layers f give
z = f(s) ~ N(0, I). Change of variables: ln p(y) = ln N(f(s)) + ln |det df/ds| + ln |det ds/dy|.

Bound on the discrete data (Theis et al. 2016; Ho et al. 2019, eq. 2): P(k) = integral of p(y) over the bin of
volume K^-D >= exp(E_u[ln p(y)]) K^-D by Jensen, so -ln P(k) <= E_u[-ln p(y)] + D ln K, in nats per example.
`loss` and `nll` return a one-sample Monte Carlo estimate of that upper bound (its expectation is the bound).
With a > 0 the logit maps [0, 1) into the box [logit a, logit(1 - a)]^D, and the Gaussian's mass outside it is
lost: p(y) integrates to less than one, so the reported bound is conservative (it also bounds the NLL of the
renormalised model).

Coupling layer (Dinh et al. 2017, eq. 9): y_b = x_b, y_{1-b} = x_{1-b} * exp(s(x_b)) + t(x_b) with a binary mask b
(a checkerboard, or half the channels; all after one 2x2 squeeze of the image); ln |det| = sum of s over the changed
variables. s = scale * tanh(raw) keeps the first steps stable.
"""

from __future__ import annotations

import math
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bfn.data.spec import DataSpec
from bfn.errors import ConfigError
from bfn.models.base import Capabilities, FinalChoice, GenerativeModel, SampleCallback, SampleStep
from bfn.models.family_nets import option, unconditional_options

OPTIONS = ("coupling_layers", "width", "blocks", "alpha")
LOG_2PI = math.log(2 * math.pi)


def squeeze(x: Tensor) -> Tensor:
    """[B, C, H, W] -> [B, 4C, H/2, W/2] (a permutation: log-determinant 0)."""
    b, c, h, w = x.shape
    x = x.view(b, c, h // 2, 2, w // 2, 2).permute(0, 1, 3, 5, 2, 4)
    return x.reshape(b, 4 * c, h // 2, w // 2)


def unsqueeze(x: Tensor) -> Tensor:
    """Inverse of `squeeze`."""
    b, c4, h, w = x.shape
    c = c4 // 4
    x = x.view(b, c, 2, 2, h, w).permute(0, 1, 4, 2, 5, 3)
    return x.reshape(b, c, 2 * h, 2 * w)


def checkerboard(shape: tuple[int, int, int], parity: int) -> Tensor:
    """Mask [1, C, H, W]: 1 where (i + j) % 2 == parity."""
    c, h, w = shape
    i = torch.arange(h)[:, None] + torch.arange(w)[None, :]
    return ((i % 2) == parity).float().expand(c, h, w).unsqueeze(0).clone()


def channel_mask(shape: tuple[int, int, int], parity: int) -> Tensor:
    """Mask [1, C, H, W]: 1 on the first (parity 0) or second (parity 1) half of the channels."""
    c, h, w = shape
    m = torch.zeros(c, h, w)
    half = c // 2
    if parity == 0:
        m[:half] = 1
    else:
        m[half:] = 1
    return m.unsqueeze(0)


class CouplingNet(nn.Module):
    """s, t = net(masked x): 3x3 conv, `blocks` residual blocks, 3x3 conv to 2C outputs (zero-initialised, so
    every coupling starts as the identity)."""

    def __init__(self, channels: int, width: int, blocks: int) -> None:
        super().__init__()
        self.inp = nn.Conv2d(channels + 1, width, 3, padding=1)  # + the mask as an input channel
        self.blocks = nn.ModuleList(nn.Sequential(nn.GroupNorm(1, width), nn.SiLU(), nn.Conv2d(width, width, 3,
                                                  padding=1), nn.GroupNorm(1, width), nn.SiLU(),
                                                  nn.Conv2d(width, width, 1)) for _ in range(blocks))
        self.out = nn.Conv2d(width, 2 * channels, 3, padding=1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)  # type: ignore[arg-type]

    def forward(self, x: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        h = self.inp(torch.cat([x, mask.expand(x.shape[0], 1, *x.shape[2:])], 1))
        for block in self.blocks:
            h = h + block(h)
        s, t = self.out(F.silu(h)).chunk(2, dim=1)
        return s, t


class AffineCoupling(nn.Module):
    """One affine coupling layer with a fixed binary mask (a buffer)."""

    mask: Tensor

    def __init__(self, mask: Tensor, width: int, blocks: int) -> None:
        super().__init__()
        self.register_buffer("mask", mask, persistent=False)
        self.net = CouplingNet(mask.shape[1], width, blocks)
        self.scale = nn.Parameter(torch.ones(1, mask.shape[1], 1, 1))

    def _st(self, x: Tensor) -> tuple[Tensor, Tensor]:
        b = self.mask
        s, t = self.net(x * b, b[:, :1])
        s = self.scale * torch.tanh(s) * (1 - b)
        return s, t * (1 - b)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """y and ln |det dy/dx| [B]."""
        s, t = self._st(x)
        return x * s.exp() + t, s.flatten(1).sum(1)

    def inverse(self, y: Tensor) -> Tensor:
        s, t = self._st(y)  # the masked half of y equals that of x
        return (y - t) * (-s).exp()


class RealNVP(GenerativeModel):
    """RealNVP on discrete pixels (binary or K bins) of (C, H, W) images with even H, W, uniformly dequantized."""

    family = "flow"

    def __init__(self, data: DataSpec, *, coupling_layers: int = 8, width: int = 32, blocks: int = 2,
                 alpha: float = 0.05) -> None:
        super().__init__()
        if data.kind == "continuous":
            raise ConfigError("this RealNVP models discrete pixels (binary or binned); the dataset is continuous")
        if len(data.shape) != 3 or data.shape[1] % 2 or data.shape[2] % 2:
            raise ConfigError(f"RealNVP needs (C, H, W) images with even H and W, got shape {data.shape}")
        self.data = data
        self.levels = data.levels or 2
        self.alpha = alpha
        c, h, w = data.shape
        # after a 2x2 squeeze to (4C, H/2, W/2): pairs of checkerboard couplings (parities 0, 1) alternating with
        # pairs of channel couplings (first, second half); every variable is changed by every pair
        shape = (4 * c, h // 2, w // 2)
        self.post = nn.ModuleList(
            AffineCoupling((checkerboard if (i // 2) % 2 == 0 else channel_mask)(shape, i % 2), width, blocks)
            for i in range(coupling_layers))

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(likelihood="bound", samplers=("inverse",))

    @property
    def data_dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    # --- the bijection ------------------------------------------------------------------------------------
    def flow_forward(self, s: Tensor) -> tuple[Tensor, Tensor]:
        """z = f(s) and ln |det df/ds| [B] (the coupling layers only)."""
        logdet = torch.zeros(s.shape[0], device=s.device, dtype=s.dtype)
        s = squeeze(s)
        for layer in self.post:
            s, ld = layer(s)
            logdet = logdet + ld
        return unsqueeze(s), logdet

    def flow_inverse(self, z: Tensor) -> Tensor:
        z = squeeze(z)
        for layer in reversed(self.post):
            z = cast(AffineCoupling, layer).inverse(z)
        return unsqueeze(z)

    def logit_transform(self, y: Tensor) -> tuple[Tensor, Tensor]:
        """s = logit(a + (1 - 2a) y) and ln |det ds/dy| [B]."""
        p = self.alpha + (1 - 2 * self.alpha) * y
        s = p.log() - (-p).log1p()
        logdet = (math.log(1 - 2 * self.alpha) - p.log() - (-p).log1p()).flatten(1).sum(1)
        return s, logdet

    def levels_of(self, x: Tensor) -> Tensor:
        """Data -> integer levels k in 0..K-1 (class indices as they are; bin centres (2k+1)/K - 1 -> k)."""
        dtype = self.data_dtype
        if self.data.kind == "discrete":
            return x.to(dtype)
        return ((x.to(dtype) + 1) * self.levels / 2 - 0.5).round().clamp(0, self.levels - 1)

    def log_density(self, y: Tensor) -> Tensor:
        """ln p(y) of the dequantized data y in [0, 1)^D, [B]."""
        s, ld_logit = self.logit_transform(y)
        z, ld_flow = self.flow_forward(s)
        log_pz = (-0.5 * z.square() - 0.5 * LOG_2PI).flatten(1).sum(1)
        return log_pz + ld_flow + ld_logit

    # --- objective and bound ------------------------------------------------------------------------------
    def nll_terms(self, x: Tensor, steps: int | str | None = None, *, cond: Tensor | None = None,
                  generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """-ln P(k) <= E_u[-ln p((k + u) / K)] + D ln K: the two terms, one sample of u (nats)."""
        k = self.levels_of(self.check_batch(x))
        u = torch.rand(k.shape, generator=generator, device=k.device, dtype=k.dtype)
        y = (k + u) / self.levels
        dims = self.data.dims
        return {"dequantized": -self.log_density(y),
                "bin_volume": torch.full((x.shape[0],), dims * math.log(self.levels), device=x.device, dtype=k.dtype)}

    def nll_name(self, steps: int | str | None = None) -> str:
        return "uniform-dequantized bound"

    def loss(self, x: Tensor, *, cond: Tensor | None = None, generator: torch.Generator | None = None) -> Tensor:
        """The bound on -ln P(x) (nats), one dequantization sample."""
        return self.nll(x, generator=generator)

    # --- sampling -----------------------------------------------------------------------------------------
    @torch.no_grad()
    def sample(self, n: int, steps: int | None = None, *, sampler: str | None = None,
               generator: torch.Generator | None = None, callback: SampleCallback | None = None,
               progress: bool = False, cond: Tensor | int | None = None, guidance: float | None = None,
               final: FinalChoice = "sample", inpaint: tuple[Tensor, Tensor] | None = None) -> Tensor:
        """z ~ N(0, I), y = sigmoid-inverse of f^-1(z), k = floor(K y): a draw of the discrete data (one pass;
        `steps` is ignored, `final` too: the flow has only draws); the callback is called once."""
        self.check_sample_args(n, steps, sampler, cond, guidance, inpaint)
        z = torch.randn((n, *self.data.shape), generator=generator, device=self.device)
        s = self.flow_inverse(z)
        y = ((s.sigmoid() - self.alpha) / (1 - 2 * self.alpha)).clamp(0, 1 - 1e-6)
        k = (y * self.levels).floor().clamp(0, self.levels - 1)
        x = k.long() if self.data.kind == "discrete" else (2 * k + 1) / self.levels - 1
        if callback is not None:
            shown = y if self.data.kind == "discrete" else 2 * y - 1
            callback(SampleStep(i=1, n=1, t=1.0, estimate=x, prediction=shown))
        return x


def build(cfg: Any, data: DataSpec) -> RealNVP:
    """A RealNVP from `cfg.options`: coupling_layers (8), width (32), blocks (2), alpha (0.05)."""
    opts = unconditional_options(cfg, OPTIONS, "flow", "the RealNVP flow")
    alpha = option(opts, "alpha", 0.05, float, low=0.0)
    if not alpha < 0.5:  # type: ignore[operator]
        raise ConfigError(f"model.options.alpha must be in [0, 0.5), got {alpha}")
    return RealNVP(data, coupling_layers=option(opts, "coupling_layers", 8, int, low=2),  # type: ignore[arg-type]
                   width=option(opts, "width", 32, int, low=4),  # type: ignore[arg-type]
                   blocks=option(opts, "blocks", 2, int, low=0), alpha=alpha)  # type: ignore[arg-type]
