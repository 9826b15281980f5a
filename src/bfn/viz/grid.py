"""Sample grids as PNG files: pure torch tiling, Pillow for the file (no torchvision)."""

from __future__ import annotations

import math
from pathlib import Path

import torch
from PIL import Image
from torch import Tensor


def to_unit_interval(x: Tensor, kind: str, *, num_classes: int = 2) -> Tensor:
    """Map data-format samples to [0, 1] for display: class index / (K - 1), or (x + 1) / 2 for values in
    [-1, 1]."""
    if kind == "discrete":
        return x.float() / max(num_classes - 1, 1)
    return ((x.float() + 1) / 2).clamp(0, 1)


def make_grid(images: Tensor, *, nrow: int | None = None, padding: int = 2, pad_value: float = 1.0) -> Tensor:
    """Tile images [N, C, H, W] in [0, 1] into one image [C, H', W'] with `nrow` per row."""
    n, c, h, w = images.shape
    nrow = nrow or math.ceil(math.sqrt(n))
    rows = math.ceil(n / nrow)
    grid = torch.full((c, rows * (h + padding) + padding, nrow * (w + padding) + padding), pad_value)
    for idx in range(n):
        r, col = divmod(idx, nrow)
        top, left = padding + r * (h + padding), padding + col * (w + padding)
        grid[:, top:top + h, left:left + w] = images[idx]
    return grid


def to_pil(image: Tensor, *, scale: int = 1) -> Image.Image:
    """[C, H, W] in [0, 1] (C = 1 or 3) -> a Pillow image, optionally enlarged by an integer factor."""
    arr = (image.clamp(0, 1) * 255).round().to(torch.uint8)
    arr = arr[0] if arr.shape[0] == 1 else arr.permute(1, 2, 0)
    pil = Image.fromarray(arr.cpu().numpy())
    if scale > 1:
        pil = pil.resize((pil.width * scale, pil.height * scale), Image.NEAREST)
    return pil


def save_sample_grid(x: Tensor, path: str | Path, *, kind: str, num_bins: int | None = None,
                     num_classes: int = 2, nrow: int | None = None, scale: int = 2) -> Path:
    """Write samples as a PNG: an image grid for image data [N, C, H, W], a histogram/scatter otherwise."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if x.ndim == 4:
        grid = make_grid(to_unit_interval(x.cpu(), kind, num_classes=num_classes), nrow=nrow)
        to_pil(grid, scale=scale).save(path)
        return path
    from bfn.viz.plots import save_sample_plot

    return save_sample_plot(x.cpu(), path)
