"""Pictures of `bfn compare`: sample grids side by side, evolution strips and training curves of several runs
(each run: a loaded `bfn.evaluation.runs.Run`, read through its model's interface only)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from torch import Tensor

from bfn.errors import ConfigError

#: recorded steps of an evolution strip, first and last included
EVOLUTION_K = 10


def save_sample_grids(runs: Sequence[Any], grids: Sequence[dict[str, Tensor]], steps: Sequence[str],
                      path: Path) -> Path:
    """One image: a row per step count ("usual": each model's own), a column per run, each cell a captioned grid
    of samples."""
    from PIL import Image

    from bfn.viz.grid import caption_image, hstack, image_grid, vstack

    rows = []
    for s in steps:
        cells = []
        for run, g in zip(runs, grids, strict=True):
            if s in g:
                count = run.model.capabilities.default_steps if s == "usual" else s
                label = f"{run.name}, {count} steps" if count else f"{run.name}, one shot"
                cells.append(caption_image(image_grid(g[s], scale=2), label, top=True))
            else:
                blank = Image.new("RGB", (120, 40), "white")
                cells.append(caption_image(blank, f"{run.name}, {s} steps: n/a", top=True))
        rows.append(hstack(cells, gap=12))
    path.parent.mkdir(parents=True, exist_ok=True)
    vstack(rows, gap=12).save(path)
    return path


def save_evolutions(runs: Sequence[Any], path: Path, *, steps: int, n: int = 4, k: int = EVOLUTION_K,
                    seed: int = 0) -> Path:
    """Each run's evolution strip (`bfn.viz.evolution_image`: k steps of n samples), stacked, captioned by run.
    For a DDPM the "input" is x_t and the "output" its predicted x_0."""
    from bfn.viz.evolution import evolution_image, record_sampling
    from bfn.viz.grid import caption_image, vstack

    strips = []
    for run in runs:
        caps = run.model.capabilities
        if caps.default_steps is None:
            continue  # a one-shot generator has no process to show
        s = min(steps, caps.max_steps or steps)
        traj = record_sampling(run.model, n, s, k=k, seed=seed, sampler=run.sampler)
        label = f"{run.name} ({run.model.family}, {run.sampler}, {s} steps)"
        strips.append(caption_image(evolution_image(traj, run.model.data), label, top=True))
    path.parent.mkdir(parents=True, exist_ok=True)
    vstack(strips, gap=16).save(path)
    return path


def save_curves(runs: Sequence[Any], path: Path) -> Path:
    """Training loss per dim of every run against the step and against wall time, on one figure (log scale)."""
    from bfn.viz.curves import series
    from bfn.viz.plots import new_figure, save_figure

    fig = new_figure(11, 4)
    by_step, by_time = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    drawn = 0
    for j, run in enumerate(runs):
        steps, values = series(run.metrics, "loss_per_dim")
        if not values:
            continue
        _, wall = series(run.metrics, "elapsed_s")
        label = f"{run.name}: {run.model.training_objective()}"
        by_step.plot(steps, values, color=f"C{j}", lw=1.2, label=label)
        if len(wall) == len(values):
            by_time.plot([w / 60 for w in wall], values, color=f"C{j}", lw=1.2, label=label)
        drawn += 1
    if not drawn:
        raise ConfigError("no run logged loss_per_dim in metrics.jsonl")
    for ax, xlabel in ((by_step, "step"), (by_time, "wall time (min)")):
        ax.set_yscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("training loss per dim")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("training curves (objectives differ: compare shapes and wall time, not values)", fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)
