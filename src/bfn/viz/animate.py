"""Animated GIFs of a sampling run (Pillow only; toy-data frames are matplotlib figures rendered to images)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from PIL import Image
from torch import Tensor

from bfn.data.spec import DataSpec
from bfn.models.base import GenerativeModel
from bfn.viz.evolution import Trajectory, final_display, record_sampling, toy_limits
from bfn.viz.grid import caption_image, hstack, image_grid, to_unit


def save_gif(frames: Sequence[Image.Image], path: str | Path, *, duration: int = 80, hold_last: int = 1000,
             loop: int = 0) -> Path:
    """Write frames as an animated GIF, `duration` ms each, the last one held `hold_last` ms; loops forever by
    default. Frames should differ from their neighbours (Pillow merges identical consecutive frames)."""
    if not frames:
        raise ValueError("a GIF needs at least one frame")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    durations = [duration] * (len(frames) - 1) + [hold_last]
    first, *rest = [f.convert("RGB") for f in frames]
    first.save(path, save_all=True, append_images=rest, duration=durations, loop=loop, disposal=1)
    return path


def image_frames(traj: Trajectory, info: DataSpec, *, nrow: int | None = None, scale: int = 2) -> list[Image.Image]:
    """One frame per recorded step (input distribution | output prediction, with step and t), then one with the
    final samples."""
    inputs, outputs = traj.stacked()
    n_total = traj.total_steps or traj.step_ids[-1]
    frames = []
    for j, (i, t) in enumerate(zip(traj.step_ids, traj.times, strict=True)):
        left = caption_image(image_grid(to_unit(info, inputs[j]), nrow=nrow, scale=scale), "input distribution")
        right = caption_image(image_grid(to_unit(info, outputs[j]), nrow=nrow, scale=scale), "output prediction")
        frames.append(caption_image(hstack([left, right], gap=8), f"step {i}/{n_total}   t = {t:.3f}", top=True))
    if traj.final is not None:
        left = caption_image(image_grid(to_unit(info, inputs[-1]), nrow=nrow, scale=scale), "input distribution")
        right = caption_image(image_grid(final_display(traj, info), nrow=nrow, scale=scale), "sample")
        frames.append(caption_image(hstack([left, right], gap=8), f"final sample   t = {1:.3f}", top=True))
    return same_size(frames)


def same_size(frames: Sequence[Image.Image]) -> list[Image.Image]:
    """Frames on white canvases of the largest frame's size (top-left aligned), as a GIF needs."""
    width, height = max(f.width for f in frames), max(f.height for f in frames)
    out = []
    for f in frames:
        if f.size != (width, height):
            canvas = Image.new("RGB", (width, height), "white")
            canvas.paste(f.convert("RGB"), (0, 0))
            f = canvas
        out.append(f)
    return out


def toy_frames(traj: Trajectory, *, data: Tensor | None = None, width: float = 7.0,
               height: float = 3.0) -> list[Image.Image]:
    """One matplotlib frame per recorded step for 1-D (histograms) or 2-D (scatter) data: input means and output
    predictions over the data, fixed axes; then one frame with the final samples."""
    from bfn.viz.plots import draw_samples, figure_to_image, new_figure

    inputs, outputs = traj.stacked()
    limits = toy_limits(inputs, outputs, data, traj.final)
    n_total = traj.total_steps or traj.step_ids[-1]
    panels: list[tuple[str, list[tuple[Tensor, str]]]] = [
        (f"step {i}/{n_total}, t = {t:.3f}", [(inputs[j], "input mean"), (outputs[j], "output prediction")])
        for j, (i, t) in enumerate(zip(traj.step_ids, traj.times, strict=True))]
    if traj.final is not None:
        panels.append(("final sample, t = 1", [(inputs[-1], "input mean"), (traj.final.float(), "sample")]))
    frames = []
    for title, pair in panels:
        fig = new_figure(width, height)
        for c, (values, label) in enumerate(pair):
            ax = fig.add_subplot(1, 2, c + 1)
            draw_samples(ax, values, data=data, limits=limits, bins=60, label=label)
            ax.set_title(label, fontsize=9)
        fig.suptitle(title, fontsize=10)
        fig.tight_layout()
        frames.append(figure_to_image(fig))
    return frames


def trajectory_frames(traj: Trajectory, info: DataSpec, *, data: Tensor | None = None, nrow: int | None = None,
                      scale: int = 2) -> list[Image.Image]:
    """Frames of a recorded trajectory: image grids for image-like data, plots for 1-D / 2-D toy data."""
    if info.image_like:
        return image_frames(traj, info, nrow=nrow, scale=scale)
    return toy_frames(traj, data=data)


def save_sampling_gif(model: GenerativeModel, path: str | Path, *, n: int | None = None, steps: int = 100,
                      k: int | None = None, seed: int = 0, scale: int = 2, data: Tensor | None = None,
                      duration: int = 80, **sample_kwargs: Any) -> Path:
    """Sample `n` examples (16 images or 1000 toy points by default) and write a GIF with a frame per step (or
    per each of k evenly spaced steps), in increasing t, plus a last frame with the samples: k + 1 frames."""
    info = model.data
    n = n or (16 if info.image_like else 1000)
    traj = record_sampling(model, n, steps, k=k, seed=seed, **sample_kwargs)
    return save_gif(trajectory_frames(traj, info, data=data, scale=scale), path, duration=duration)
