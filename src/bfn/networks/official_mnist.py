"""The official BFN MNIST network: the improved-diffusion U-Net (Nichol & Dhariwal 2021) as the official
`mnist_discrete` config builds it, with its per-pixel input adapter and skip output adapter.

Parameter names equal the official ones without the leading `net.` (see `bfn.models.official`), so the
published `mnist_ema.pt` loads directly. Written from the architecture's description, not copied.

Input: bfn's `DiscreteFlow` with K = 2 feeds 2 p(class 1) - 1 per pixel; the official flow feeds
2 p(class 0) - 1, so the input is negated first (`flip_input`). Output: one number per pixel, the Bernoulli
logit of class 1, which is what both flows read.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bfn.errors import ConfigError
from bfn.networks.embeddings import check_inputs

#: the official time scaling: the sinusoidal embedding sees 4000 t
TIME_SCALE = 4000.0


def sinusoidal_embedding(steps: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """[cos(steps w_k), sin(steps w_k)] with w_k = max_period^(-k / (dim/2)), k = 0..dim/2-1: [B] -> [B, dim]
    (the DDPM embedding with cosines first, as improved-diffusion orders it)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=steps.device) / half)
    args = steps.float()[:, None] * freqs[None]
    emb = torch.cat([args.cos(), args.sin()], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb


M = TypeVar("M", bound=nn.Module)


def zero_init(module: M) -> M:
    """The module with all its parameters set to zero (output layers start as the identity of the residual)."""
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


class ResBlock(nn.Module):
    """GN-SiLU-conv, + projected time embedding, GN-SiLU-dropout-conv, plus a (1x1-conv) skip."""

    def __init__(self, channels: int, emb_dim: int, out_channels: int, dropout: float, groups: int) -> None:
        super().__init__()
        self.in_layers = nn.Sequential(nn.GroupNorm(groups, channels), nn.SiLU(),
                                       nn.Conv2d(channels, out_channels, 3, padding=1))
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_dim, out_channels))
        last = zero_init(nn.Conv2d(out_channels, out_channels, 3, padding=1))
        self.out_layers = nn.Sequential(nn.GroupNorm(groups, out_channels), nn.SiLU(), nn.Dropout(dropout), last)
        self.skip_connection = (nn.Identity() if out_channels == channels
                                else nn.Conv2d(channels, out_channels, 1))

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.in_layers(x) + self.emb_layers(emb)[:, :, None, None]
        return self.skip_connection(x) + self.out_layers(h)


class AttentionBlock(nn.Module):
    """Self-attention over all positions; the qkv channels are grouped per head, each head's group split into
    q, k and v (improved-diffusion's layout)."""

    def __init__(self, channels: int, heads: int, groups: int) -> None:
        super().__init__()
        if channels % heads:
            raise ConfigError(f"attention channels {channels} must be divisible by heads {heads}")
        self.heads = heads
        self.norm = nn.GroupNorm(groups, channels)
        self.qkv = nn.Conv1d(channels, 3 * channels, 1)
        self.proj_out = zero_init(nn.Conv1d(channels, channels, 1))

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        flat = x.reshape(b, c, h * w)
        qkv = self.qkv(self.norm(flat)).reshape(b * self.heads, 3 * c // self.heads, h * w)
        q, k, v = qkv.transpose(1, 2).chunk(3, dim=-1)  # 3 x (B*heads, T, c/heads)
        out = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, c, h * w)
        return (flat + self.proj_out(out)).reshape(b, c, h, w)


class Downsample(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.op = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.op(x)


class Upsample(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))


class EmbedSequential(nn.Sequential):
    """A sequence of layers; residual blocks also receive the time embedding."""

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:  # type: ignore[override]
        for layer in self:
            x = layer(x, emb) if isinstance(layer, ResBlock) else layer(x)
        return x


class OutputAdapter(nn.Module):
    """Per-pixel Linear from [projected input, U-Net output] to the output features."""

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.output_projection = nn.Linear(in_features, out_features)

    def forward(self, x: Tensor) -> Tensor:
        return self.output_projection(x)


class OfficialMNISTUNet(nn.Module):
    """The official BFN MNIST U-Net (24,808,961 parameters at the defaults).

    Per pixel the network sees [2 p0 - 1, 2t - 1] (p0 = probability of class 0), projects it to
    `model_channels` with a Linear, runs the U-Net with the time embedding of 4000 t (sinusoidal, then
    Linear-SiLU-Linear to 4 `model_channels`), and maps [projected input, U-Net output] per pixel to
    `out_channels` numbers.

    Args:
        in_channels, out_channels, image_size: filled in by bfn from the data (1, 1, 28 for binarized MNIST).
        model_channels, channel_mult, num_res_blocks, dropout, num_heads: as the official config.
        attention_resolutions: downsampling factors (1, 2, 4, ...) whose levels get attention. The official
            config lists 8 and 16, which no level of a 28x28 U-Net with three levels reaches, so only the middle
            block attends (kept as is, for the same parameters).
        unet_out_channels: channels of the U-Net's last conv (the official `out_channels`, 128).
        groups: GroupNorm groups (32).
        flip_input: negate the input (see the module docstring).
    """

    def __init__(self, *, in_channels: int = 1, out_channels: int = 1, image_size: int = 28,
                 model_channels: int = 128, channel_mult: Sequence[int] = (1, 2, 2), num_res_blocks: int = 2,
                 attention_resolutions: Sequence[int] = (8, 16), dropout: float = 0.5, num_heads: int = 4,
                 unet_out_channels: int = 128, groups: int = 32, flip_input: bool = True) -> None:
        super().__init__()
        if model_channels % groups or channel_mult[0] != 1:
            raise ConfigError(f"model_channels ({model_channels}) must be a multiple of groups ({groups}) and "
                              f"channel_mult must start with 1, got {tuple(channel_mult)}")
        if image_size % 2 ** (len(channel_mult) - 1):
            raise ConfigError(f"image_size {image_size} must be divisible by 2^{len(channel_mult) - 1}")
        self.in_channels, self.out_channels, self.image_size = in_channels, out_channels, image_size
        self.model_channels = model_channels
        self.flip_input = flip_input
        emb_dim = 4 * model_channels
        self.input_projection = nn.Linear(in_channels + 1, model_channels)
        self.time_embed = nn.Sequential(nn.Linear(model_channels, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))

        self.input_blocks = nn.ModuleList([EmbedSequential(nn.Conv2d(model_channels, model_channels, 3,
                                                                     padding=1))])
        skip_channels = [model_channels]
        ch, ds = model_channels, 1
        for level, mult in enumerate(channel_mult):
            for _ in range(num_res_blocks):
                layers: list[nn.Module] = [ResBlock(ch, emb_dim, mult * model_channels, dropout, groups)]
                ch = mult * model_channels
                if ds in attention_resolutions:
                    layers.append(AttentionBlock(ch, num_heads, groups))
                self.input_blocks.append(EmbedSequential(*layers))
                skip_channels.append(ch)
            if level != len(channel_mult) - 1:
                self.input_blocks.append(EmbedSequential(Downsample(ch)))
                skip_channels.append(ch)
                ds *= 2
        self.middle_block = EmbedSequential(ResBlock(ch, emb_dim, ch, dropout, groups),
                                            AttentionBlock(ch, num_heads, groups),
                                            ResBlock(ch, emb_dim, ch, dropout, groups))
        self.output_blocks = nn.ModuleList()
        for level, mult in reversed(list(enumerate(channel_mult))):
            for i in range(num_res_blocks + 1):
                layers = [ResBlock(ch + skip_channels.pop(), emb_dim, mult * model_channels, dropout, groups)]
                ch = mult * model_channels
                if ds in attention_resolutions:
                    layers.append(AttentionBlock(ch, num_heads, groups))
                if level and i == num_res_blocks:
                    layers.append(Upsample(ch))
                    ds //= 2
                self.output_blocks.append(EmbedSequential(*layers))
        self.out = nn.Sequential(nn.GroupNorm(groups, ch), nn.SiLU(),
                                 zero_init(nn.Conv2d(ch, unet_out_channels, 3, padding=1)))
        self.output_adapter = OutputAdapter(model_channels + unet_out_channels, out_channels)

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        """x [B, C, H, W] (2 p(class 1) - 1), t [B] -> output [B, out_channels, H, W]."""
        check_inputs(x, t, type(self).__name__)
        b, _, h, w = x.shape
        value = -x if self.flip_input else x
        t_feat = (2 * t.float() - 1)[:, None, None, None].expand(b, h, w, 1)
        feats = torch.cat([value.permute(0, 2, 3, 1), t_feat], dim=-1)  # (B, H, W, C + 1)
        x_proj = self.input_projection(feats)  # (B, H, W, model_channels)
        emb = self.time_embed(sinusoidal_embedding(t * TIME_SCALE, self.model_channels))
        hs = []
        hid = x_proj.permute(0, 3, 1, 2).contiguous()  # contiguous as the official code: same dropout masks
        for block in self.input_blocks:
            hid = block(hid, emb)
            hs.append(hid)
        hid = self.middle_block(hid, emb)
        for block in self.output_blocks:
            hid = block(torch.cat([hid, hs.pop()], dim=1), emb)
        out = self.out(hid).permute(0, 2, 3, 1)  # (B, H, W, unet_out_channels)
        out = self.output_adapter(torch.cat([x_proj, out], dim=-1))  # (B, H, W, out_channels)
        return out.permute(0, 3, 1, 2)
