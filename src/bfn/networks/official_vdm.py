"""The official BFN CIFAR-10 network: the VDM U-Net (Kingma et al. 2021) as the official `cifar10_*` configs
build it: Fourier features of the input, `n_blocks` residual blocks down and `n_blocks + 1` up at full
resolution, one middle attention block, and a per-pixel Linear on [input, features] as output adapter.

Parameter names equal the official ones without the leading `net.` (see `bfn.models.official`). The network
sees the input mean mu only (no per-pixel time channel) and predicts the noise: 1 number per channel for a
continuous flow (eps-hat), 2 for a discretised one (mu_eps, ln sigma_eps); bfn's flows read exactly that.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bfn.errors import ConfigError
from bfn.networks.embeddings import check_inputs
from bfn.networks.official_mnist import OutputAdapter, zero_init

#: the official time offset: the embedding sees (t + 0.001) * 1000, so that t = 0 is not the zero vector
TIME_OFFSET = 0.001
TIME_SCALE = 1000.0


def vdm_time_embedding(t: Tensor, dim: int, max_timescale: float = 10_000.0) -> Tensor:
    """[sin(s w_k), cos(s w_k)] with s = 1000 (t + 0.001) and w_k log-spaced from 1 to 1/max_timescale over
    dim/2 values: [B] -> [B, dim] (VDM's tensor2tensor embedding, sines first)."""
    if dim % 2:
        raise ConfigError(f"the time embedding size must be even, got {dim}")
    steps = (t.float() + TIME_OFFSET) * TIME_SCALE
    inv = torch.logspace(0.0, -math.log10(max_timescale), dim // 2, device=t.device)
    args = steps[:, None] * inv[None, :]
    return torch.cat([args.sin(), args.cos()], dim=1)


def fourier_features(x: Tensor, exponents: tuple[float, ...] = (5.0, 6.0)) -> Tensor:
    """[sin(2 pi 2^n x), cos(2 pi 2^n x)] for n in `exponents`: [B, C, H, W] -> [B, 2 len(exponents) C, H, W]
    (sines of every frequency and channel, then cosines)."""
    freqs = torch.tensor([2.0**n * 2 * math.pi for n in exponents], dtype=x.dtype, device=x.device)
    feats = (freqs[None, :, None, None, None] * x[:, None]).flatten(1, 2)  # (B, F*C, H, W)
    return torch.cat([feats.sin(), feats.cos()], dim=1)


class ResnetBlock(nn.Module):
    """GN-SiLU-conv, + a bias-free projection of the conditioning, GN-SiLU-dropout-conv, plus a skip."""

    def __init__(self, ch_in: int, ch_out: int, cond_dim: int, dropout: float, groups: int) -> None:
        super().__init__()
        self.net1 = nn.Sequential(nn.GroupNorm(groups, ch_in), nn.SiLU(), nn.Conv2d(ch_in, ch_out, 3, padding=1))
        self.cond_proj = zero_init(nn.Linear(cond_dim, ch_out, bias=False))
        self.net2 = nn.Sequential(nn.GroupNorm(groups, ch_out), nn.SiLU(), nn.Dropout(dropout),
                                  zero_init(nn.Conv2d(ch_out, ch_out, 3, padding=1)))
        self.skip_conv = nn.Conv2d(ch_in, ch_out, 1) if ch_in != ch_out else None

    def forward(self, x: Tensor, cond: Tensor) -> Tensor:
        h = self.net2(self.net1(x) + self.cond_proj(cond)[:, :, None, None])
        return (x if self.skip_conv is None else self.skip_conv(x)) + h


class Attention(nn.Module):
    """Multi-head attention on a [B, 3C, H, W] tensor: q, k, v are the three channel thirds, each split into
    heads (VDM's layout)."""

    def __init__(self, heads: int) -> None:
        super().__init__()
        self.heads = heads

    def forward(self, qkv: Tensor) -> Tensor:
        b, c3, h, w = qkv.shape
        c = c3 // 3
        q, k, v = (z.reshape(b, self.heads, c // self.heads, h * w).transpose(-1, -2)
                   for z in qkv.chunk(3, dim=1))  # 3 x (B, heads, T, c/heads)
        out = F.scaled_dot_product_attention(q, k, v)
        return out.transpose(-1, -2).reshape(b, c, h, w)


class AttentionBlock(nn.Module):
    """x + conv1x1(attention(conv1x1(GN(x))))."""

    def __init__(self, heads: int, channels: int, groups: int) -> None:
        super().__init__()
        if channels % heads:
            raise ConfigError(f"attention channels {channels} must be divisible by heads {heads}")
        self.layers = nn.Sequential(nn.GroupNorm(groups, channels), nn.Conv2d(channels, 3 * channels, 1),
                                    Attention(heads), zero_init(nn.Conv2d(channels, channels, 1)))

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x) + x


class UpDownBlock(nn.Module):
    def __init__(self, resnet_block: ResnetBlock, attention_block: AttentionBlock | None) -> None:
        super().__init__()
        self.resnet_block = resnet_block
        self.attention_block = attention_block

    def forward(self, x: Tensor, cond: Tensor) -> Tensor:
        x = self.resnet_block(x, cond)
        return x if self.attention_block is None else self.attention_block(x)


class OfficialVDMUNet(nn.Module):
    """The official BFN CIFAR-10 U-Net (30,722,188 parameters with 3 outputs, 30,722,584 with 6).

    Args:
        in_channels, out_channels, image_size: filled in by bfn (3; 3 for a continuous, 6 for a discretised
            flow; 32).
        embedding_dim, n_blocks, n_attention_heads, dropout, norm_groups, attention_everywhere,
        use_fourier_features: as the official config (128, 32, 1, 0.1, 32, False, True).
    """

    def __init__(self, *, in_channels: int = 3, out_channels: int = 3, image_size: int = 32,
                 embedding_dim: int = 128, n_blocks: int = 32, n_attention_heads: int = 1, dropout: float = 0.1,
                 norm_groups: int = 32, attention_everywhere: bool = False,
                 use_fourier_features: bool = True) -> None:
        super().__init__()
        if embedding_dim % norm_groups:
            raise ConfigError(f"embedding_dim {embedding_dim} must be a multiple of norm_groups {norm_groups}")
        self.in_channels, self.out_channels, self.image_size = in_channels, out_channels, image_size
        self.embedding_dim = embedding_dim
        self.use_fourier_features = use_fourier_features
        cond_dim = 4 * embedding_dim
        self.embed_conditioning = nn.Sequential(nn.Linear(embedding_dim, cond_dim), nn.SiLU(),
                                                nn.Linear(cond_dim, cond_dim), nn.SiLU())
        total_in = in_channels * (5 if use_fourier_features else 1)  # x, then sin and cos at 2 frequencies
        self.conv_in = nn.Conv2d(total_in, embedding_dim, 3, padding=1)

        def block(ch_in: int) -> UpDownBlock:
            attn = AttentionBlock(n_attention_heads, embedding_dim, norm_groups) if attention_everywhere else None
            return UpDownBlock(ResnetBlock(ch_in, embedding_dim, cond_dim, dropout, norm_groups), attn)

        self.down_blocks = nn.ModuleList(block(embedding_dim) for _ in range(n_blocks))
        self.mid_resnet_block_1 = ResnetBlock(embedding_dim, embedding_dim, cond_dim, dropout, norm_groups)
        self.mid_attn_block = AttentionBlock(n_attention_heads, embedding_dim, norm_groups)
        self.mid_resnet_block_2 = ResnetBlock(embedding_dim, embedding_dim, cond_dim, dropout, norm_groups)
        self.up_blocks = nn.ModuleList(block(2 * embedding_dim) for _ in range(n_blocks + 1))
        self.conv_out = nn.Sequential(nn.GroupNorm(norm_groups, embedding_dim), nn.SiLU(),
                                      zero_init(nn.Conv2d(embedding_dim, embedding_dim, 3, padding=1)))
        self.output_adapter = OutputAdapter(in_channels + embedding_dim, out_channels)

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        """x [B, C, H, W] (the input mean mu), t [B] -> noise prediction [B, out_channels, H, W]."""
        check_inputs(x, t, type(self).__name__)
        cond = self.embed_conditioning(vdm_time_embedding(t, self.embedding_dim))
        h = torch.cat([x, fourier_features(x)], dim=1) if self.use_fourier_features else x
        h = self.conv_in(h)
        hs = []
        for down in self.down_blocks:
            hs.append(h)
            h = down(h, cond)
        hs.append(h)
        h = self.mid_resnet_block_2(self.mid_attn_block(self.mid_resnet_block_1(h, cond)), cond)
        for up in self.up_blocks:
            h = up(torch.cat([h, hs.pop()], dim=1), cond)
        feats = torch.cat([x, self.conv_out(h)], dim=1).permute(0, 2, 3, 1)  # (B, H, W, C + embedding_dim)
        return self.output_adapter(feats).permute(0, 3, 1, 2)
