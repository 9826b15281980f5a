"""Observations for inpainting from image files: an image in the model's data format and a mask of observed
pixels (a PNG, white = observed, or a named region such as "top")."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from bfn.errors import DataError
from bfn.utils.binned import bin_centres

#: named masks: which part of the image is observed (kept); the rest is drawn by the model
MASK_REGIONS: tuple[str, ...] = ("top", "bottom", "left", "right", "border")


def read_image(path: str | Path, shape: tuple[int, ...]) -> Tensor:
    """A PNG/JPEG as values in [0, 1] of shape (C, H, W) = `shape`, grey or RGB to match C."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if len(shape) != 3:
        raise DataError(f"inpainting needs image data (C, H, W); this model's examples have shape {list(shape)}")
    c, h, w = shape
    if not path.is_file():
        raise DataError(f"image file {path} does not exist; give the path of a PNG of size {w}x{h}")
    try:
        with Image.open(path) as img:
            a = np.asarray(img.convert("L" if c == 1 else "RGB"), dtype=np.float32) / 255.0
    except (UnidentifiedImageError, OSError) as err:
        raise DataError(f"cannot read {path} as an image ({err}); give a PNG of size {w}x{h}") from None
    if a.shape[:2] != (h, w):
        raise DataError(f"{path} is {a.shape[1]}x{a.shape[0]} pixels but the model draws {w}x{h} images; "
                        "resize it")
    a = a[None] if a.ndim == 2 else a.transpose(2, 0, 1)
    return torch.from_numpy(np.ascontiguousarray(a))


def image_to_data(values: Tensor, kind: str, *, num_classes: int | None = None,
                  num_bins: int | None = None) -> Tensor:
    """Values in [0, 1] -> the model's data format, the inverse of the display mapping `bfn.viz.to_unit_interval`:
    class round(v (K - 1)) (K = 2: v >= 0.5, dynamic binarisation's threshold), the bin of 8-bit grey level
    floor(255 v K / 256), or 2 v - 1 for continuous data."""
    if kind == "discrete":
        k = num_classes or 2
        return (values * (k - 1)).round().long().clamp(0, k - 1)
    if kind == "discretized":
        if not num_bins:
            raise DataError("discretized data needs num_bins")
        grey = (values * 255).round().long()
        return bin_centres(num_bins)[(grey * num_bins // 256).clamp(0, num_bins - 1)]
    return values * 2 - 1


def region_mask(name: str, shape: tuple[int, ...]) -> Tensor:
    """A boolean mask (C, H, W), true where observed: the top/bottom/left/right half, or a border of a quarter of
    the width around a hidden centre."""
    c, h, w = shape
    mask = torch.zeros(h, w, dtype=torch.bool)
    if name == "top":
        mask[: h // 2] = True
    elif name == "bottom":
        mask[h // 2:] = True
    elif name == "left":
        mask[:, : w // 2] = True
    elif name == "right":
        mask[:, w // 2:] = True
    elif name == "border":
        mask[:] = True
        mask[h // 4: h - h // 4, w // 4: w - w // 4] = False
    else:
        raise DataError(f"unknown mask {name!r}; give a PNG (white = observed) or one of {', '.join(MASK_REGIONS)}")
    return mask.expand(c, h, w).clone()


def load_observation(image: str | Path, mask: str | Path, *, kind: str, shape: tuple[int, ...],
                     num_classes: int | None = None, num_bins: int | None = None) -> tuple[Tensor, Tensor]:
    """(known values in data format, boolean mask) of one example for `BFN.sample(inpaint=...)`."""
    known = image_to_data(read_image(image, shape), kind, num_classes=num_classes, num_bins=num_bins)
    if str(mask) in MASK_REGIONS:
        return known, region_mask(str(mask), shape)
    if not Path(mask).is_file():
        raise DataError(f"mask {str(mask)!r} is neither a file nor a region; give a PNG (white = observed) or one of "
                        f"{', '.join(MASK_REGIONS)}")
    m = read_image(mask, shape) >= 0.5
    if not m.any():
        raise DataError(f"the mask {mask} is all black: no pixel is observed (white = observed)")
    return known, m
