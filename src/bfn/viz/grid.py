"""Sample grids as PNG files: pure torch tiling, Pillow for the file and the captions (no torchvision)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image, ImageDraw, ImageFont
from torch import Tensor

from bfn.data.spec import DataSpec
from bfn.models.base import GenerativeModel

#: height in pixels of one caption line drawn by `caption_image` and the strip/progress figures
CAPTION_HEIGHT = 14
#: sample grids enlarge small images until each is at least this many pixels on its longer side
MIN_PIXELS = 48
#: grey level of the lines between the images of a grid: unlike white or black, it never merges with a stroke of
#: a binary or grey image
SEPARATOR = 0.5


def display_scale(height: int, width: int, *, minimum: int = 2) -> int:
    """Integer enlargement for a grid of height x width images: `minimum`, or more so that an image is at least
    `MIN_PIXELS` wide (8x8 digits: 6)."""
    return max(minimum, math.ceil(MIN_PIXELS / max(height, width, 1)))


def to_unit_interval(x: Tensor, kind: str, *, num_classes: int = 2) -> Tensor:
    """Map data-format samples to [0, 1] for display: class index / (K - 1), or (x + 1) / 2 for values in
    [-1, 1]."""
    if kind == "discrete":
        return (x.float() / max(num_classes - 1, 1)).clamp(0, 1)
    return ((x.float() + 1) / 2).clamp(0, 1)


def expected_class(probs: Tensor) -> Tensor:
    """Expected class index sum_k p_k k of probabilities [..., K] (for K = 2 the probability of class 1)."""
    k = torch.arange(probs.shape[-1], dtype=probs.dtype, device=probs.device)
    return (probs * k).sum(-1)


def display_values(x: Tensor, kind: str, *, num_classes: int = 2, data_ndim: int | None = None) -> Tensor:
    """Samples or output probabilities -> values in [0, 1] of the data's shape.

    Discrete data given as probabilities [B, *S, K] (float, one trailing dim more than the data) is shown as its
    expected class index / (K - 1); everything else goes through `to_unit_interval`.
    """
    if kind == "discrete" and x.is_floating_point() and data_ndim is not None and x.ndim == data_ndim + 1:
        x = expected_class(x.float())
    return to_unit_interval(x, kind, num_classes=num_classes)


def as_images(x: Tensor) -> Tensor:
    """View per-example values as images [N, C, H, W]: [N, H, W] gains a channel, [N, D] becomes a 1 x D strip."""
    if x.ndim == 4:
        return x
    if x.ndim == 3:
        return x.unsqueeze(1)
    if x.ndim == 2:
        return x[:, None, None, :]
    raise ValueError(f"cannot show values of shape {tuple(x.shape)} as images")


def is_image_like(shape: Sequence[int], kind: str) -> bool:
    """Whether one example of this shape is drawn as an image (not as a histogram or scatter plot)."""
    return not (len(shape) == 1 and shape[0] <= 2 and kind != "discrete")


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
    """[C, H, W] in [0, 1] (C = 1 or 3; otherwise the first channel) -> a Pillow image, optionally enlarged by
    an integer factor."""
    arr = (image.detach().float().clamp(0, 1) * 255).round().to(torch.uint8)
    arr = arr.permute(1, 2, 0) if arr.shape[0] == 3 else arr[0]
    pil = Image.fromarray(arr.cpu().numpy())
    if scale > 1:
        pil = pil.resize((pil.width * scale, pil.height * scale), Image.Resampling.NEAREST)
    return pil


def font(size: int = 11) -> Any:
    """Pillow's built-in font at `size` px (the bitmap default on Pillow builds without FreeType)."""
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def draw_text(image: Image.Image, xy: tuple[int, int], text: str, *, width: int | None = None,
              fill: Any = 0) -> None:
    """Draw `text` at `xy` in place, centred within `width` pixels when given."""
    draw = ImageDraw.Draw(image)
    f = font()
    x, y = xy
    if width is not None:
        left, _, right, _ = draw.textbbox((0, 0), text, font=f)
        x += int(max((width - (right - left)) // 2, 0))
    draw.text((x, y), text, fill=fill, font=f)


def text_width(text: str) -> int:
    """Width in pixels of `text` in the caption font."""
    left, _, right, _ = ImageDraw.Draw(Image.new("L", (1, 1))).textbbox((0, 0), text, font=font())
    return int(right - left)


def widen(image: Image.Image, width: int) -> Image.Image:
    """`image` centred on a white canvas at least `width` pixels wide (itself when already that wide)."""
    if image.width >= width:
        return image
    out = Image.new("RGB", (width, image.height), "white")
    out.paste(image.convert("RGB"), ((width - image.width) // 2, 0))
    return out


def caption_image(image: Image.Image, text: str, *, top: bool = False) -> Image.Image:
    """A copy of `image` (as RGB) with one centred caption line below it (or above it with `top`), widened when
    the caption is wider than the image."""
    image = widen(image.convert("RGB"), text_width(text) + 4)
    out = Image.new("RGB", (image.width, image.height + CAPTION_HEIGHT), "white")
    out.paste(image, (0, CAPTION_HEIGHT if top else 0))
    draw_text(out, (0, 0 if top else image.height), text, width=image.width)
    return out


def hstack(images: Sequence[Image.Image], *, gap: int = 0, fill: Any = "white") -> Image.Image:
    """Images side by side (top-aligned, RGB) with `gap` pixels between them."""
    width = sum(im.width for im in images) + gap * (len(images) - 1)
    out = Image.new("RGB", (width, max(im.height for im in images)), fill)
    left = 0
    for im in images:
        out.paste(im.convert("RGB"), (left, 0))
        left += im.width + gap
    return out


def vstack(images: Sequence[Image.Image], *, gap: int = 0, fill: Any = "white") -> Image.Image:
    """Images one above the other (left-aligned, RGB) with `gap` pixels between them."""
    height = sum(im.height for im in images) + gap * (len(images) - 1)
    out = Image.new("RGB", (max(im.width for im in images), height), fill)
    top = 0
    for im in images:
        out.paste(im.convert("RGB"), (0, top))
        top += im.height + gap
    return out


def image_grid(values: Tensor, *, nrow: int | None = None, scale: int = 2, padding: int = 2,
               pad_value: float = 1.0) -> Image.Image:
    """Values in [0, 1] of any image-like shape ([N, C, H, W], [N, H, W] or [N, D]) -> one tiled Pillow image."""
    return to_pil(make_grid(as_images(values.detach().cpu().float()), nrow=nrow, padding=padding,
                            pad_value=pad_value), scale=scale)


def save_sample_grid(x: Tensor, path: str | Path, *, kind: str, num_bins: int | None = None,
                     num_classes: int = 2, nrow: int | None = None, scale: int | None = None,
                     data: Tensor | None = None, title: str | None = None) -> Path:
    """Write samples as a PNG: an image grid for image data [N, C, H, W] (and [N, H, W]; discrete sequences
    [N, L] as one row per sample), a histogram (1-D) or scatter plot (2-D and more) otherwise.

    Discrete samples may also be given as output probabilities [N, *S, K] (float): each pixel then shows the
    expected class (the probability of class 1 for K = 2). `data` is drawn under toy-data plots. `scale`: the
    integer enlargement (default: `display_scale`, so that small images are not drawn at native size); images are
    separated by grey lines (`SEPARATOR`).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    x = x.detach().cpu()
    probs = kind == "discrete" and x.is_floating_point() and x.shape[-1] == num_classes and x.ndim >= 3
    data_ndim = x.ndim - 1 if probs else x.ndim
    if x.ndim >= 3 or (kind == "discrete" and x.ndim == 2) or probs:
        values = display_values(x, kind, num_classes=num_classes, data_ndim=data_ndim)
        rows = nrow if nrow is not None else (1 if values.ndim == 2 else None)
        images = as_images(values)
        scale = scale or (2 if values.ndim == 2 else display_scale(images.shape[-2], images.shape[-1]))
        save_png(image_grid(values, nrow=rows, scale=scale, pad_value=SEPARATOR), path)
        return path
    from bfn.viz.plots import save_sample_plot

    return save_sample_plot(x, path, data=None if data is None else data.detach().cpu(),
                            title=title or f"{x.shape[0]} samples")


def save_png(image: Image.Image, path: str | Path) -> Path:
    """Write a Pillow image as PNG atomically (temp file + fsync + rename): a kill never leaves half a picture."""
    from bfn.utils.io import atomic_write

    path = Path(path)
    atomic_write(path, lambda tmp: image.save(tmp, format="PNG"))
    return path


def to_unit(data: DataSpec, values: Tensor) -> Tensor:
    """Recorded values of `data` (data units; the expected class index for discrete data) -> [0, 1] for display."""
    return to_unit_interval(values, data.kind, num_classes=data.classes)


def save_model_grid(model: GenerativeModel, path: str | Path, *, n: int = 64, steps: int = 100, seed: int = 0,
                    probs: bool = False, data: Tensor | None = None, nrow: int | None = None,
                    scale: int | None = None,
                    **sample_kwargs: Any) -> Path:
    """Sample `n` examples and write them with `save_sample_grid`. With `probs`, show the output distribution at
    t = 1 instead of a draw from it (the expected class for discrete data, k-hat for discretised data)."""
    info = model.data
    gen = torch.Generator(device=model.device).manual_seed(seed)
    final = sample_kwargs.pop("final", "sample")
    x = model.sample(n, steps, generator=gen, final="mean" if probs else final, **sample_kwargs)
    what = "output means" if probs else "samples"
    return save_sample_grid(x, path, kind=info.kind, num_classes=info.classes, nrow=nrow, scale=scale,
                            data=data, title=f"{n} {what}, {steps} steps")
