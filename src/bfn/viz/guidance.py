"""The classifier-free guidance picture: rows = class labels, columns = guidance scales w."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from bfn.errors import ConfigError
from bfn.models.base import GenerativeModel
from bfn.viz.grid import (
    CAPTION_HEIGHT,
    caption_image,
    draw_text,
    hstack,
    image_grid,
    save_png,
    text_width,
    to_unit_interval,
    vstack,
)


def guided_samples(model: GenerativeModel, scales: Sequence[float], *, labels: Sequence[int] | None = None,
                   per_cell: int = 4, steps: int = 100, seed: int = 0, **sample_kwargs: Any) -> torch.Tensor:
    """Samples [len(scales), len(labels), per_cell, *S]: one batch per scale with the same seed, so that a column
    differs from the next only by w (with w = 0 the model's plain conditional sampler)."""
    num_labels = model.num_labels
    if not num_labels:
        raise ConfigError("the guidance grid needs a class-conditional model (e.g. a run of mnist-discrete-cond)")
    labels = list(range(num_labels)) if labels is None else list(labels)
    if not labels or min(labels) < 0 or max(labels) >= num_labels:
        raise ConfigError(f"labels must lie in 0..{num_labels - 1}, got {labels}")
    if per_cell <= 0:
        raise ConfigError(f"samples per cell must be positive, got {per_cell}")
    device = model.device
    cond = torch.tensor(labels, device=device).repeat_interleave(per_cell)
    out = []
    for w in scales:
        gen = torch.Generator(device=device).manual_seed(seed)
        x = model.sample(cond.shape[0], steps, generator=gen, cond=cond, guidance=float(w), **sample_kwargs)
        out.append(x.reshape(len(labels), per_cell, *x.shape[1:]).cpu())
    return torch.stack(out)


def guidance_grid_image(samples: torch.Tensor, scales: Sequence[float], labels: Sequence[int], *, kind: str,
                        num_classes: int = 2, scale: int = 2) -> Image.Image:
    """Tile `guided_samples` output: one column of cells per scale (captioned "w = ..."), one row per label."""
    columns = []
    for j, w in enumerate(scales):
        cells = [image_grid(to_unit_interval(samples[j, i], kind, num_classes=num_classes), nrow=samples.shape[2],
                            scale=scale) for i in range(len(labels))]
        columns.append(caption_image(vstack(cells), f"w = {w:g}", top=True))
    body = hstack(columns, gap=6)
    margin = max(text_width(str(label)) for label in labels) + 8
    out = Image.new("RGB", (body.width + margin, body.height), "white")
    out.paste(body, (margin, 0))
    row_height = (columns[0].height - CAPTION_HEIGHT) / len(labels)
    for i, label in enumerate(labels):
        draw_text(out, (2, int(CAPTION_HEIGHT + (i + 0.5) * row_height) - 6), str(label))
    return out


def save_guidance_grid(model: GenerativeModel, path: str | Path, *, scales: Sequence[float] = (0.0, 1.0, 2.0, 4.0),
                       labels: Sequence[int] | None = None, per_cell: int = 4, steps: int = 100, seed: int = 0,
                       **sample_kwargs: Any) -> Path:
    """Write the labels x guidance-scales picture of a class-conditional image model (BFN or DDPM)."""
    info = model.data
    if not info.image_like:
        raise ConfigError("the guidance grid draws images; this model's data is not image-like")
    labels = list(range(model.num_labels)) if labels is None and model.num_labels else labels
    x = guided_samples(model, scales, labels=labels, per_cell=per_cell, steps=steps, seed=seed, **sample_kwargs)
    image = guidance_grid_image(x, scales, labels or [], kind=info.kind, num_classes=info.classes)
    return save_png(image, path)
