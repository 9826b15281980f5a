"""Text you can read and watch: samples as lines of a .txt file, and how the characters of a sample settle over
the sampling steps (the paper's text figures): at chosen steps, the most probable character of p_O at each
position, shaded by its probability (black: certain; pale: a guess among many)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from PIL import Image, ImageDraw
from torch import Tensor

from bfn.data.text import ALPHABET, decode_batch
from bfn.models.base import GenerativeModel, SampleStep
from bfn.viz.animate import save_gif
from bfn.viz.evolution import chosen_steps
from bfn.viz.grid import font

#: pixels per character cell and per text line of the rendered figures
CELL_W, LINE_H, MARGIN = 8, 15, 6
#: characters per rendered line (longer sequences wrap)
WRAP = 64


def write_text_samples(x: Tensor, path: str | Path) -> Path:
    """Write class-index samples [N, L] as N lines of text (atomically) and return the path."""
    from bfn.utils.io import atomic_write_text

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, "".join(line + "\n" for line in decode_batch(x)))
    return path


@dataclass
class TextTrajectory:
    """A sampler callback keeping, at chosen steps, the most probable character of p_O per position and its
    probability, for the first `keep` samples: `chars` and `probs` hold one [keep, L] tensor per recorded step."""

    steps: set[int] | None = None
    keep: int | None = None
    step_ids: list[int] = field(default_factory=list)
    times: list[float] = field(default_factory=list)
    chars: list[Tensor] = field(default_factory=list)
    probs: list[Tensor] = field(default_factory=list)
    total_steps: int = 0
    final: Tensor | None = None

    def __call__(self, step: SampleStep) -> None:
        self.total_steps = step.n
        if self.steps is not None and step.i not in self.steps:
            return
        p = step.state.output.probs[: self.keep].float().cpu()  # p_O of a BFN step: [keep, L, K]
        top, idx = p.max(-1)
        self.step_ids.append(step.i)
        self.times.append(step.t)
        self.chars.append(idx)
        self.probs.append(top)


def record_text_sampling(model: GenerativeModel, n: int, steps: int, *, k: int | None = 10, seed: int = 0,
                         keep: int | None = None, **sample_kwargs: Any) -> TextTrajectory:
    """Sample n sequences and record `TextTrajectory` at k evenly spaced steps (None: every step)."""
    traj = TextTrajectory(steps=None if k is None else set(chosen_steps(steps, k)), keep=keep)
    gen = torch.Generator(device=getattr(model, "device", "cpu")).manual_seed(seed)
    traj.final = model.sample(n, steps, generator=gen, callback=traj, **sample_kwargs)[:keep].cpu()
    return traj


def _shade(p: float) -> tuple[int, int, int]:
    """Probability 1/K..1 -> grey from pale to black."""
    level = int(round(215 * (1.0 - min(max(p, 0.0), 1.0))))
    return (level, level, level)


def _lines(chars: Tensor, probs: Tensor | None, wrap: int) -> list[list[tuple[str, float]]]:
    """One sample's characters (and probabilities) cut into lines of `wrap` cells."""
    cells = [(ALPHABET[int(c)], 1.0 if probs is None else float(p))
             for c, p in zip(chars.tolist(), (probs if probs is not None else chars).tolist(), strict=True)]
    return [cells[i:i + wrap] for i in range(0, len(cells), wrap)]


def render_rows(rows: Sequence[tuple[str, list[list[tuple[str, float]]]]], *, wrap: int = WRAP) -> Image.Image:
    """An image of labelled blocks of shaded character cells (one block per (label, lines))."""
    f = font()
    label_w = max(8 * len(label) for label, _ in rows) + 2 * MARGIN
    height = MARGIN + sum(LINE_H * max(1, len(lines)) + 4 for _, lines in rows) + MARGIN
    image = Image.new("RGB", (label_w + CELL_W * wrap + MARGIN, height), "white")
    draw = ImageDraw.Draw(image)
    y = MARGIN
    for label, lines in rows:
        draw.text((MARGIN, y), label, fill=(90, 90, 160), font=f)
        for line in lines:
            for j, (ch, p) in enumerate(line):
                x = label_w + j * CELL_W
                if ch == " ":  # a space: a faint underscore, so that settled spaces are visible
                    draw.line([(x + 1, y + LINE_H - 3), (x + CELL_W - 2, y + LINE_H - 3)], fill=_shade(p * 0.4))
                else:
                    draw.text((x, y), ch, fill=_shade(p), font=f)
            y += LINE_H
        y += 4
    return image


def evolution_image(traj: TextTrajectory, sample: int = 0, *, wrap: int = WRAP) -> Image.Image:
    """One sample's characters at each recorded step (rows, labelled with step and t), then the final sample."""
    rows = [(f"step {i:>4}/{traj.total_steps}  t = {t:.2f}", _lines(traj.chars[j][sample], traj.probs[j][sample], wrap))
            for j, (i, t) in enumerate(zip(traj.step_ids, traj.times, strict=True))]
    if traj.final is not None:
        rows.append(("final sample", _lines(traj.final[sample], None, wrap)))
    return render_rows(rows, wrap=wrap)


def save_text_evolution(model: GenerativeModel, path: str | Path, *, n: int | None = None, steps: int = 100,
                        k: int = 10, seed: int = 0, wrap: int = WRAP, **sample_kwargs: Any) -> Path:
    """PNG of how the characters of `n` samples (default 2) settle: each sample's most probable characters at k
    steps, shaded by probability, stacked vertically; returns the path."""
    n = n or 2
    traj = record_text_sampling(model, n, steps, k=k, seed=seed, **sample_kwargs)
    images = [evolution_image(traj, s, wrap=wrap) for s in range(n)]
    out = Image.new("RGB", (max(im.width for im in images), sum(im.height for im in images) + 10 * (n - 1)), "white")
    y = 0
    for im in images:
        out.paste(im, (0, y))
        y += im.height + 10
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    out.save(path)
    return path


def save_text_gif(model: GenerativeModel, path: str | Path, *, n: int | None = None, steps: int = 100,
                  k: int | None = None, seed: int = 0, wrap: int = WRAP, duration: int = 80,
                  **sample_kwargs: Any) -> Path:
    """Animated GIF: one frame per recorded step (every step, or k of them) showing `n` samples (default 8) as
    shaded most-probable characters, then a frame with the final samples."""
    n = n or 8
    traj = record_text_sampling(model, n, steps, k=k, seed=seed, **sample_kwargs)
    frames = []
    for j, (i, t) in enumerate(zip(traj.step_ids, traj.times, strict=True)):
        rows = [(f"#{s}", _lines(traj.chars[j][s], traj.probs[j][s], wrap)) for s in range(n)]
        frames.append(_titled(render_rows(rows, wrap=wrap), f"step {i}/{traj.total_steps}   t = {t:.3f}"))
    if traj.final is not None:
        rows = [(f"#{s}", _lines(traj.final[s], None, wrap)) for s in range(n)]
        frames.append(_titled(render_rows(rows, wrap=wrap), "final samples"))
    return save_gif(frames, path, duration=duration)


def _titled(image: Image.Image, title: str) -> Image.Image:
    out = Image.new("RGB", (image.width, image.height + LINE_H + MARGIN), "white")
    ImageDraw.Draw(out).text((MARGIN, MARGIN), title, fill=0, font=font())
    out.paste(image, (0, LINE_H + MARGIN))
    return out

