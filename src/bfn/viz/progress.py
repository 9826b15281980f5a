"""Training progress: the periodic sample grids of a run (`samples/step_XXXXXXX.png`) in one captioned figure."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from pathlib import Path

from PIL import Image

from bfn.errors import DataError
from bfn.viz.grid import caption_image

STEP_PATTERN = re.compile(r"step_(\d+)")
#: pixels between the captioned cells of the progress figure
CELL_GAP = 6


def sample_grids(source: str | Path) -> list[tuple[int, Path]]:
    """(step, path) of the sample grids in a run directory (its samples/ folder) or a folder, by step."""
    folder = Path(source)
    if (folder / "samples").is_dir():
        folder = folder / "samples"
    found = []
    for path in folder.glob("*.png") if folder.is_dir() else []:
        match = STEP_PATTERN.search(path.stem)
        if match:
            found.append((int(match.group(1)), path))
    if not found:
        raise DataError(f"no step_*.png sample grids in {folder}; train with train.sample_every > 0 to write them")
    return sorted(found)


def pick(items: Sequence[tuple[int, Path]], most: int | None) -> list[tuple[int, Path]]:
    """At most `most` items evenly spread over the list, keeping the first and the last."""
    if most is None or len(items) <= most:
        return list(items)
    if most <= 1:
        return [items[-1]]
    idx = sorted({round(j * (len(items) - 1) / (most - 1)) for j in range(most)})
    return [items[i] for i in idx]


def progress_image(items: Sequence[tuple[int, Path]], *, ncols: int | None = None,
                   max_width: int = 400) -> Image.Image:
    """Tile grids in step order, each captioned "step N" and shrunk to at most `max_width` pixels wide; all cells
    take the size of the largest grid."""
    cells = []
    for step, path in items:
        with Image.open(path) as im:
            image = im.convert("RGB")
        if image.width > max_width:
            height = max(1, round(image.height * max_width / image.width))
            image = image.resize((max_width, height), Image.Resampling.LANCZOS)
        cells.append(caption_image(image, f"step {step:,}"))
    ncols = ncols or min(len(cells), 5)
    rows = math.ceil(len(cells) / ncols)
    cw, ch = max(c.width for c in cells), max(c.height for c in cells)
    out = Image.new("RGB", (ncols * cw + (ncols + 1) * CELL_GAP, rows * ch + (rows + 1) * CELL_GAP), "white")
    for j, cell in enumerate(cells):
        r, c = divmod(j, ncols)
        out.paste(cell, (CELL_GAP + c * (cw + CELL_GAP), CELL_GAP + r * (ch + CELL_GAP)))
    return out


def save_progress(source: str | Path, path: str | Path, *, most: int | None = 10, ncols: int | None = None,
                  max_width: int = 400) -> Path:
    """Write the run's periodic sample grids (at most `most`, evenly spread, first and last kept) as one PNG with
    the training step under each grid."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    progress_image(pick(sample_grids(source), most), ncols=ncols, max_width=max_width).save(path)
    return path
