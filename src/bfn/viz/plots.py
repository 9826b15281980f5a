"""Plots that need axes. Matplotlib is imported lazily and used through `Figure` + the Agg canvas directly, so
nothing here touches pyplot's global state or the notebook's backend."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PIL import Image
from torch import Tensor

DPI = 100


def new_figure(width: float, height: float, *, dpi: int = DPI) -> Any:
    """A matplotlib `Figure` of width x height inches drawn by the Agg canvas (no display needed)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=dpi)
    FigureCanvasAgg(fig)
    return fig


def figure_to_image(fig: Any) -> Image.Image:
    """Render a figure to an RGB Pillow image of exactly figsize x dpi pixels."""
    fig.canvas.draw()
    width, height = fig.canvas.get_width_height()
    return Image.frombuffer("RGBA", (width, height), fig.canvas.buffer_rgba(), "raw", "RGBA", 0, 1).convert("RGB")


def save_figure(fig: Any, path: str | Path) -> Path:
    """Write a figure to `path` (format from the suffix) at its own size, creating the folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=fig.dpi)
    return path


def draw_samples(ax: Any, x: Tensor, *, data: Tensor | None = None, bins: int = 100,
                 limits: tuple[float, float] | None = None, label: str = "samples") -> None:
    """One panel: a histogram of 1-D samples over the data histogram, or a scatter plot of the first two dims."""
    x = x.detach().cpu().reshape(x.shape[0], -1).float()
    d = None if data is None else data.detach().cpu().reshape(data.shape[0], -1).float()
    if x.shape[1] == 1:
        if limits is None:
            lo, hi = float(x.min()), float(x.max())
            if d is not None:
                lo, hi = min(lo, float(d.min())), max(hi, float(d.max()))
            limits = (lo, hi) if hi > lo else (lo - 1, hi + 1)
        if d is not None:
            ax.hist(d[:, 0].numpy(), bins=bins, range=limits, alpha=0.5, label="data", density=True, color="C0")
        ax.hist(x[:, 0].clamp(*limits).numpy(), bins=bins, range=limits, alpha=0.5, label=label, density=True,
                color="C1")
        ax.set_xlim(*limits)
        ax.set_xlabel("x")
    else:
        if d is not None:
            ax.scatter(d[:, 0].numpy(), d[:, 1].numpy(), s=2, alpha=0.3, label="data", color="C0")
        ax.scatter(x[:, 0].numpy(), x[:, 1].numpy(), s=2, alpha=0.5, label=label, color="C1")
        if limits is not None:
            ax.set_xlim(*limits)
            ax.set_ylim(*limits)
        ax.set_aspect("equal")
    ax.legend(loc="upper right", fontsize=8)


def save_sample_plot(x: Tensor, path: str | Path, *, data: Tensor | None = None, bins: int = 100,
                     title: str = "samples") -> Path:
    """1-D data: histogram of samples (over the data histogram when given); 2-D data: a scatter plot."""
    one_d = x.reshape(x.shape[0], -1).shape[1] == 1
    fig = new_figure(8, 3) if one_d else new_figure(4, 4)
    ax = fig.add_subplot()
    draw_samples(ax, x, data=data, bins=bins)
    ax.set_title(title)
    fig.tight_layout()
    return save_figure(fig, path)
