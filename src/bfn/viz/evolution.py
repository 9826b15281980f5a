"""The sampling process step by step: a `Trajectory` recorder (a sampler callback) and evolution strips, the
input distribution and the output prediction of a few samples at k steps, as in "a digit across ten steps"."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import Tensor

from bfn.data.spec import DataSpec
from bfn.errors import ConfigError
from bfn.models.base import GenerativeModel, SampleStep
from bfn.viz.grid import (
    CAPTION_HEIGHT,
    as_images,
    draw_text,
    hstack,
    make_grid,
    text_width,
    to_pil,
    to_unit,
    widen,
)

#: pixels between the input, output and sample blocks of an evolution strip
BLOCK_GAP = 8
#: smallest width in pixels of one cell of an evolution strip (small images are enlarged to reach it)
MIN_CELL = 32


def chosen_steps(n: int, k: int | None) -> list[int]:
    """k step indices of 1..n, evenly spaced and including the first and the last (all n when k is None or
    k >= n)."""
    if n < 1:
        raise ConfigError(f"steps must be positive, got {n}")
    if k is None or k >= n:
        return list(range(1, n + 1))
    if k < 1:
        raise ConfigError(f"the number of recorded steps must be positive, got {k}")
    if k == 1:
        return [n]
    return sorted({math.floor(1.5 + j * (n - 1) / (k - 1)) for j in range(k)})


class Trajectory:
    """A sampling callback that keeps, at chosen steps, the model's current estimate of x and its prediction
    (`SampleStep.estimate` / `.prediction`, display units) of the first `keep` samples, on the CPU.

    Args:
        steps: the 1-based step indices to record (None: every step).
        keep: how many samples of the batch to keep (None: all).
    """

    def __init__(self, *, steps: Sequence[int] | None = None, keep: int | None = None) -> None:
        self.wanted = None if steps is None else set(int(s) for s in steps)
        self.keep = keep
        self.step_ids: list[int] = []
        self.times: list[float] = []
        self.inputs: list[Tensor] = []
        self.outputs: list[Tensor] = []
        self.total_steps: int | None = None
        self.final: Tensor | None = None

    def __call__(self, step: SampleStep) -> None:
        self.total_steps = step.n
        if self.wanted is not None and step.i not in self.wanted:
            return
        if self.times and step.t <= self.times[-1]:
            raise ValueError(f"sampler steps must come in increasing t; got t={step.t} after t={self.times[-1]}")
        cut = slice(None, self.keep)
        self.step_ids.append(step.i)
        self.times.append(float(step.t))
        self.inputs.append(step.estimate[cut].detach().float().cpu())
        self.outputs.append(step.prediction[cut].detach().float().cpu())

    def __len__(self) -> int:
        return len(self.times)

    def stacked(self) -> tuple[Tensor, Tensor]:
        """Inputs and outputs as tensors [T, N, *S] in order of time."""
        if not self.times:
            raise ValueError("the trajectory recorded no steps; pass it as callback= to a sampler")
        return torch.stack(self.inputs), torch.stack(self.outputs)


def record_sampling(model: GenerativeModel, n: int, steps: int, *, k: int | None = None, keep: int | None = None,
                    seed: int | None = 0, generator: torch.Generator | None = None, **sample_kwargs: Any
                    ) -> Trajectory:
    """Sample `n` examples with `steps` steps, recording k evenly spaced steps (every step when k is None);
    the returned samples are kept as `trajectory.final` (first `keep`). Extra arguments go to `model.sample`."""
    traj = Trajectory(steps=chosen_steps(steps, k), keep=keep)
    if generator is None and seed is not None:
        generator = torch.Generator(device=model.device).manual_seed(seed)
    x = model.sample(n, steps, generator=generator, callback=traj, **sample_kwargs)
    traj.final = x[slice(None, keep)].detach().cpu()
    return traj


def final_display(traj: Trajectory, info: DataSpec) -> Tensor:
    """The recorded final samples as values in [0, 1] (data format: class indices or values in [-1, 1])."""
    if traj.final is None:
        raise ValueError("the trajectory has no final samples; record it with record_sampling")
    return to_unit(info, traj.final.float())


#: pixels (before scaling) around each cell of a strip
CELL_PADDING = 2


def strip_block(values: Tensor, *, scale: int, padding: int = CELL_PADDING) -> Image.Image:
    """[N, T, ...] values in [0, 1] -> an image with one row per sample and one column per step."""
    n, t = values.shape[:2]
    images = as_images(values.reshape(n * t, *values.shape[2:]))
    return to_pil(make_grid(images, nrow=t, padding=padding), scale=scale)


def evolution_image(traj: Trajectory, info: DataSpec, *, scale: int = 2) -> Image.Image:
    """Evolution strip of image-like data: per sample a row of input summaries at the recorded steps, then the
    output predictions, then the final sample; a header gives t for each column. Small images are enlarged so
    that a cell is at least `MIN_CELL` pixels wide."""
    inputs, outputs = (to_unit(info, v).transpose(0, 1) for v in traj.stacked())  # [N, T, *S]
    scale = max(scale, math.ceil(MIN_CELL / as_images(inputs[0]).shape[-1]))
    blocks = [strip_block(inputs, scale=scale), strip_block(outputs, scale=scale)]
    titles = ["input distribution", "output prediction"]
    if traj.final is not None:
        blocks.append(strip_block(final_display(traj, info)[:, None], scale=scale))
        titles.append("sample")
    raw_widths = [block.width for block in blocks]
    blocks = [widen(block, text_width(title) + 4) for block, title in zip(blocks, titles, strict=True)]
    body = hstack(blocks, gap=BLOCK_GAP)
    out = Image.new("RGB", (body.width, body.height + 2 * CAPTION_HEIGHT), "white")
    out.paste(body, (0, 2 * CAPTION_HEIGHT))
    cols = len(traj.times)
    pad = scale * CELL_PADDING
    left = 0
    for b, (block, title) in enumerate(zip(blocks, titles, strict=True)):
        draw_text(out, (left, 0), title, width=block.width)
        if b < 2:
            cell, shift = (raw_widths[b] - pad) / cols, left + pad + (block.width - raw_widths[b]) // 2
            for j, t in enumerate(traj.times):
                draw_text(out, (shift + round(j * cell), CAPTION_HEIGHT), f"{t:.2f}", width=round(cell) - pad)
        else:
            draw_text(out, (left, CAPTION_HEIGHT), "t=1", width=block.width)
        left += block.width + BLOCK_GAP
    return out


def evolution_plot(traj: Trajectory, info: DataSpec, *, data: Tensor | None = None, width: float = 2.0,
                   height: float = 2.0) -> Any:
    """Evolution of toy data (1-D histograms, 2-D scatter plots): a column per recorded step, the input means
    on the top row and the output predictions below (a matplotlib Figure)."""
    from bfn.viz.plots import draw_samples, new_figure

    inputs, outputs = traj.stacked()
    cols = len(traj.times)
    fig = new_figure(width * cols, 2 * height)
    limits = toy_limits(inputs, outputs, data)
    for j, t in enumerate(traj.times):
        for r, (values, name) in enumerate(((inputs, "input mean"), (outputs, "output mean"))):
            ax = fig.add_subplot(2, cols, r * cols + j + 1)
            draw_samples(ax, values[j], data=data, limits=limits, bins=50, label=name)
            ax.set_title(f"{name}, t={t:.2f}", fontsize=8)
            ax.tick_params(labelsize=6)
            ax.set_xlabel("")
            if ax.get_legend() is not None:
                ax.get_legend().remove()
    fig.tight_layout()
    return fig


def toy_limits(*values: Tensor | None, margin: float = 0.1, tail: float = 0.005) -> tuple[float, float]:
    """A common axis range covering all given toy values but their extreme `tail` fractions on each side (and at
    least [-1, 1])."""
    lo, hi = -1.0, 1.0
    for v in values:
        if v is not None and v.numel():
            flat = v.detach().reshape(-1).float().cpu()
            flat = flat[torch.linspace(0, flat.numel() - 1, min(flat.numel(), 100_000)).long()]
            lo, hi = min(lo, float(flat.quantile(tail))), max(hi, float(flat.quantile(1 - tail)))
    pad = margin * (hi - lo)
    return lo - pad, hi + pad


def save_evolution(model: GenerativeModel, path: str | Path, *, n: int | None = None, steps: int = 100, k: int = 10,
                   seed: int = 0, scale: int = 2, data: Tensor | None = None, **sample_kwargs: Any) -> Path:
    """Sample `n` examples and write their evolution over k evenly spaced steps (first and last included):
    an image strip for image-like data (n = 4 by default), a grid of histograms / scatter plots for 1-D / 2-D toy
    data (n = 1000 by default; `data` drawn underneath)."""
    info = model.data
    n = n or (4 if info.image_like else 1000)
    traj = record_sampling(model, n, steps, k=k, seed=seed, **sample_kwargs)
    return save_trajectory_evolution(traj, info, path, scale=scale, data=data)


def save_trajectory_evolution(traj: Trajectory, info: DataSpec, path: str | Path, *, scale: int = 2,
                              data: Tensor | None = None) -> Path:
    """Write the evolution strip (or toy-data plot) of a recorded trajectory."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if info.image_like:
        evolution_image(traj, info, scale=scale).save(path)
        return path
    from bfn.viz.plots import save_figure

    return save_figure(evolution_plot(traj, info, data=data), path)

