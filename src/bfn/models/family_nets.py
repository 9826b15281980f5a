"""Small networks shared by the lecture's families (VAE, GAN/WGAN-GP): a DCGAN-style convolutional encoder that
maps a 28x28 (or any 4k x 4k) image to a vector, and its mirror-image decoder; MLPs for flat data and tiny tests."""

from __future__ import annotations

import math
from typing import Any

from torch import Tensor, nn

from bfn.errors import ConfigError


def image_side(shape: tuple[int, ...]) -> int | None:
    """The side of a square (C, H, W) image whose side is a multiple of 4 (what the conv nets take), else None."""
    if len(shape) == 3 and shape[1] == shape[2] and shape[1] % 4 == 0:
        return shape[1]
    return None


class ConvEncoder(nn.Module):
    """[B, C, H, W] -> [B, out_features]: two stride-2 4x4 convolutions (H -> H/4), then a linear layer."""

    def __init__(self, in_channels: int, side: int, out_features: int, width: int = 32,
                 norm: bool = False) -> None:
        super().__init__()
        s = side // 4

        def block(c_in: int, c_out: int) -> list[nn.Module]:
            layers: list[nn.Module] = [nn.Conv2d(c_in, c_out, 4, 2, 1)]
            if norm:  # LayerNorm over (C, H, W) per example: no batch coupling (needed by WGAN-GP's penalty)
                layers.append(nn.GroupNorm(1, c_out))
            return [*layers, nn.LeakyReLU(0.2)]

        self.net = nn.Sequential(*block(in_channels, width), *block(width, 2 * width), nn.Flatten(),
                                 nn.Linear(2 * width * s * s, out_features))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class ConvDecoder(nn.Module):
    """[B, in_features] -> [B, C, H, W]: a linear layer to (2w, H/4, W/4), then two stride-2 transposed convs."""

    def __init__(self, in_features: int, out_channels: int, side: int, width: int = 32) -> None:
        super().__init__()
        s = side // 4
        self.shape = (2 * width, s, s)
        self.fc = nn.Sequential(nn.Linear(in_features, 2 * width * s * s), nn.ReLU())
        self.net = nn.Sequential(nn.ConvTranspose2d(2 * width, width, 4, 2, 1), nn.GroupNorm(8, width), nn.ReLU(),
                                 nn.ConvTranspose2d(width, out_channels, 4, 2, 1))

    def forward(self, z: Tensor) -> Tensor:
        return self.net(self.fc(z).view(-1, *self.shape))


class MLP(nn.Module):
    """[B, *S_in] -> [B, out_shape] with `depth` hidden layers of `width` units (flat data and tiny tests)."""

    def __init__(self, in_features: int, out_shape: tuple[int, ...], width: int = 64, depth: int = 1) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        d = in_features
        for _ in range(depth):
            layers += [nn.Linear(d, width), nn.SiLU()]
            d = width
        layers.append(nn.Linear(d, math.prod(out_shape)))
        self.net = nn.Sequential(*layers)
        self.out_shape = out_shape

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x).view(-1, *self.out_shape)


def pick_arch(arch: str, shape: tuple[int, ...]) -> str:
    """"conv" for square images of side 4k, else "mlp"; an explicit "conv" on other shapes is a ConfigError."""
    if arch == "auto":
        return "conv" if image_side(shape) else "mlp"
    if arch == "conv" and not image_side(shape):
        raise ConfigError(f"model.options.arch=conv needs square (C, H, W) images with H a multiple of 4, got shape "
                          f"{shape}; use arch=mlp")
    if arch not in ("conv", "mlp"):
        raise ConfigError(f"model.options.arch must be auto, conv or mlp, got {arch!r}")
    return arch


def option(options: dict, name: str, default: object, kind: type, *, low: float | None = None) -> object:
    """A family option from `cfg.options`, type- and range-checked (ConfigError naming the key otherwise)."""
    value = options.get(name, default)
    ok = isinstance(value, kind) and not isinstance(value, bool) if kind is not bool else isinstance(value, bool)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value, ok = float(value), True
    if not ok or (low is not None and value < low):  # type: ignore[operator]
        want = f"{kind.__name__}" + (f" >= {low}" if low is not None else "")
        raise ConfigError(f"model.options.{name} must be a {want}, got {value!r}")
    return value


def check_options(options: dict, known: tuple[str, ...], family: str) -> None:
    """Unknown keys in `model.options` are a ConfigError that lists the family's options."""
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise ConfigError(f"unknown model.options {', '.join(unknown)} for a {family} model; it takes "
                          f"{', '.join(known)}")


def unconditional_options(cfg: Any, known: tuple[str, ...], family: str, noun: str) -> dict:
    """`cfg.options` as a dict, after the intake every unconditional family shares: unknown keys are a
    ConfigError listing the family's options (`check_options`), and `model.conditional=true` a ConfigError
    naming `noun` ("the VAE") and the fix."""
    opts = dict(cfg.options)
    check_options(opts, known, family)
    if getattr(cfg, "conditional", False):
        raise ConfigError(f"{noun} is unconditional here; set model.conditional=false")
    return opts


class ScalarHead(nn.Module):
    """A network with one output per example, returned as [B] (the critics of the GANs and of adversarial
    distillation)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x).reshape(x.shape[0])
