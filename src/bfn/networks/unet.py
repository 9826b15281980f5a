"""Image U-Net in the style of improved DDPM (Nichol & Dhariwal 2021), sized for 28x28 ... 64x64 on CPU."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bfn.errors import ConfigError, DataError
from bfn.networks.embeddings import ConditionEmbedding, check_inputs, resolve_labels


class ResBlock(nn.Module):
    """GroupNorm-SiLU-conv3x3, scale-shift by the embedding, GroupNorm-SiLU-dropout-conv3x3, plus a skip."""

    def __init__(self, *, in_channels: int, out_channels: int, emb_dim: int, dropout: float,
                 num_groups: int) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(num_groups, in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.emb_proj = nn.Linear(emb_dim, 2 * out_channels)
        self.norm2 = nn.GroupNorm(num_groups, out_channels)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.skip = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.emb_proj(F.silu(emb))[:, :, None, None].chunk(2, dim=1)  # 2 x (B, C, 1, 1)
        h = self.norm2(h) * (1 + scale) + shift
        h = self.conv2(self.dropout(F.silu(h)))
        return self.skip(x) + h


class AttentionBlock(nn.Module):
    """Multi-head self-attention over the H*W positions of a feature map, with a residual connection."""

    def __init__(self, *, channels: int, num_heads: int, num_groups: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.norm = nn.GroupNorm(num_groups, channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = nn.Conv2d(channels, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        qkv = self.qkv(self.norm(x)).reshape(b, 3, self.num_heads, c // self.num_heads, h * w)
        q, k, v = qkv.transpose(-1, -2).unbind(dim=1)  # 3 x (B, heads, HW, C/heads)
        out = F.scaled_dot_product_attention(q, k, v)  # (B, heads, HW, C/heads)
        out = out.transpose(-1, -2).reshape(b, c, h, w)  # (B, C, H, W)
        return x + self.proj(out)


class Downsample(nn.Module):
    """Halve H and W with a strided conv3x3."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    """Double H and W: nearest-neighbour upsampling then conv3x3 (avoids checkerboard artefacts)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class Level(nn.Module):
    """One resolution of the U-Net: residual blocks, each followed by self-attention or an identity.

    A container only: `UNet.forward` threads the skip connections through `res` and `attn`.
    """

    def __init__(self, *, channels: list[tuple[int, int]], emb_dim: int, dropout: float, num_groups: int,
                 num_heads: int | None) -> None:
        super().__init__()
        self.res = nn.ModuleList(
            ResBlock(in_channels=c_in, out_channels=c_out, emb_dim=emb_dim, dropout=dropout,
                     num_groups=num_groups)
            for c_in, c_out in channels
        )
        self.attn = nn.ModuleList(
            AttentionBlock(channels=c_out, num_heads=num_heads, num_groups=num_groups)
            if num_heads is not None else nn.Identity()
            for _, c_out in channels
        )


class UNet(nn.Module):
    """Improved-DDPM U-Net (Nichol & Dhariwal 2021, after Ho et al. 2020): [B, C_in, H, W] -> [B, C_out, H, W].

    Args:
        in_channels: channels of the input.
        out_channels: channels of the output.
        base_channels: channels of the first level; level i has `base_channels * channel_mult[i]`.
        channel_mult: one entry per resolution; H and W are halved between consecutive levels.
        num_res_blocks: residual blocks per level on the way down (one more on the way up).
        attention_resolutions: spatial sizes (relative to `image_size`) that get self-attention; the
            middle block has attention only if this is non-empty.
        dropout: dropout inside the residual blocks.
        num_classes: number of class labels for class-conditional use; label `num_classes` is the null label.
        num_groups: GroupNorm groups; must divide `base_channels`.
        image_size: the H (= W) the network is built for, used to place the attention layers.
        num_heads: attention heads; must divide the channels of every level with attention.
        patch_size: side of the non-overlapping patches the image is cut into before the first convolution
            (space-to-depth, `F.pixel_unshuffle`) and put back from after the last one (`F.pixel_shuffle`):
            the U-Net runs at H/p x W/p on p*p times the channels, which cuts the cost of the full-resolution
            level by about p*p (a 64x64 canvas with p = 2 costs what a 32x32 one does).
        pad: zero-pad inputs whose H or W is not divisible by 2^(levels - 1) up to the next multiple, and crop
            the output back (any image size then works); without it such sizes are a DataError.
    """

    def __init__(self, *, in_channels: int, out_channels: int, base_channels: int = 32,
                 channel_mult: tuple[int, ...] = (1, 2, 2), num_res_blocks: int = 1,
                 attention_resolutions: tuple[int, ...] = (), dropout: float = 0.0, num_classes: int | None = None,
                 num_groups: int = 8, image_size: int = 28, num_heads: int = 4, patch_size: int = 1,
                 pad: bool = False) -> None:
        super().__init__()
        if patch_size < 1 or image_size % patch_size:
            raise ConfigError(f"patch_size ({patch_size}) must be a positive divisor of image_size ({image_size})")
        channel_mult = tuple(channel_mult)
        attention_resolutions = tuple(attention_resolutions)
        if not channel_mult or min(channel_mult) < 1:
            raise ConfigError(f"channel_mult must be a non-empty tuple of positive ints, got {channel_mult}")
        if base_channels < 1 or base_channels % num_groups:
            raise ConfigError(f"base_channels ({base_channels}) must be a positive multiple of num_groups "
                              f"({num_groups})")
        if num_res_blocks < 1:
            raise ConfigError(f"num_res_blocks must be >= 1, got {num_res_blocks}")
        resolutions = [image_size // patch_size // 2**i for i in range(len(channel_mult))]
        unknown = sorted(set(attention_resolutions) - set(resolutions))
        if unknown:
            raise ConfigError(f"attention_resolutions {unknown} match no level; an image_size of {image_size} "
                              f"gives the resolutions {resolutions}")
        for i, r in enumerate(resolutions):
            channels = base_channels * channel_mult[i]
            if (r in attention_resolutions or (attention_resolutions and i == len(resolutions) - 1)) \
                    and channels % num_heads:
                raise ConfigError(f"num_heads ({num_heads}) must divide the {channels} channels at resolution {r}")

        self.in_channels = in_channels
        self.num_classes = num_classes
        self.pad = pad
        self.levels = len(channel_mult)
        self.patch_size = patch_size
        self.factor = patch_size * 2 ** (self.levels - 1)
        emb_dim = 4 * base_channels
        self.embed = ConditionEmbedding(dim=emb_dim, features=base_channels, num_classes=num_classes)
        self.conv_in = nn.Conv2d(in_channels * patch_size**2, base_channels, 3, padding=1)

        def heads_at(r: int) -> int | None:
            return num_heads if r in attention_resolutions else None

        # encoder: remember the channels of every feature map pushed onto the skip stack
        skip_channels = [base_channels]
        ch = base_channels
        self.down = nn.ModuleList()
        self.downsample = nn.ModuleList()
        for i, mult in enumerate(channel_mult):
            pairs = []
            for _ in range(num_res_blocks):
                pairs.append((ch, base_channels * mult))
                ch = base_channels * mult
                skip_channels.append(ch)
            self.down.append(Level(channels=pairs, emb_dim=emb_dim, dropout=dropout, num_groups=num_groups,
                                   num_heads=heads_at(resolutions[i])))
            if i < len(channel_mult) - 1:
                self.downsample.append(Downsample(ch))
                skip_channels.append(ch)

        mid_heads = num_heads if attention_resolutions else None
        self.mid1 = ResBlock(in_channels=ch, out_channels=ch, emb_dim=emb_dim, dropout=dropout,
                             num_groups=num_groups)
        self.mid_attn = (AttentionBlock(channels=ch, num_heads=mid_heads, num_groups=num_groups)
                         if mid_heads is not None else nn.Identity())
        self.mid2 = ResBlock(in_channels=ch, out_channels=ch, emb_dim=emb_dim, dropout=dropout,
                             num_groups=num_groups)

        # decoder: one extra block per level consumes the skip pushed by the downsample (or conv_in)
        self.up = nn.ModuleList()
        self.upsample = nn.ModuleList()
        for i, mult in reversed(list(enumerate(channel_mult))):
            pairs = []
            for _ in range(num_res_blocks + 1):
                pairs.append((ch + skip_channels.pop(), base_channels * mult))
                ch = base_channels * mult
            self.up.append(Level(channels=pairs, emb_dim=emb_dim, dropout=dropout, num_groups=num_groups,
                                 num_heads=heads_at(resolutions[i])))
            if i > 0:
                self.upsample.append(Upsample(ch))
        assert not skip_channels, "every skip connection is consumed"

        self.norm_out = nn.GroupNorm(num_groups, ch)
        self.conv_out = nn.Conv2d(ch, out_channels * patch_size**2, 3, padding=1)
        # zero init: the network starts by predicting 0 everywhere (a neutral output for every flow)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)  # type: ignore[arg-type]

    def forward(self, x: Tensor, t: Tensor, cond: Tensor | None = None) -> Tensor:
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise DataError(f"UNet expects input [B, {self.in_channels}, H, W], got {list(x.shape)}")
        h_in, w_in = x.shape[-2:]
        ph, pw = -h_in % self.factor, -w_in % self.factor
        if (ph or pw) and self.pad:
            x = F.pad(x, (0, pw, 0, ph))  # (B, C, H + ph, W + pw); cropped again at the end
        elif ph or pw:
            raise DataError(f"UNet with {self.levels} levels and patch_size {self.patch_size} needs H and W "
                            f"divisible by {self.factor}, got {h_in}x{w_in}; add pad: true to the network's kwargs, "
                            "resize the images or shorten channel_mult")
        check_inputs(x, t, "UNet")
        labels = resolve_labels(cond, self.num_classes, x.shape[0], x.device, "UNet")
        emb = self.embed(t, labels)  # (B, 4 * base_channels)

        if self.patch_size > 1:
            x = F.pixel_unshuffle(x, self.patch_size)  # (B, C p^2, H/p, W/p)
        h = self.conv_in(x)
        skips = [h]
        for i, level in enumerate(self.down):
            for res, attn in zip(level.res, level.attn, strict=True):  # type: ignore[arg-type]
                h = attn(res(h, emb))
                skips.append(h)
            if i < len(self.downsample):
                h = self.downsample[i](h)
                skips.append(h)

        h = self.mid2(self.mid_attn(self.mid1(h, emb)), emb)

        for i, level in enumerate(self.up):
            for res, attn in zip(level.res, level.attn, strict=True):  # type: ignore[arg-type]
                h = attn(res(torch.cat([h, skips.pop()], dim=1), emb))  # (B, C + C_skip, H, W) -> (B, C, H, W)
            if i < len(self.upsample):
                h = self.upsample[i](h)

        out = self.conv_out(F.silu(self.norm_out(h)))
        out = F.pixel_shuffle(out, self.patch_size) if self.patch_size > 1 else out  # (B, C_out, H, W)
        return out[..., :h_in, :w_in]
