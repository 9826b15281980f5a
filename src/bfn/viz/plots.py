"""Plots that need axes (matplotlib, Agg backend, imported lazily)."""

from __future__ import annotations

from pathlib import Path

from torch import Tensor


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_sample_plot(x: Tensor, path: str | Path, *, data: Tensor | None = None, bins: int = 100,
                     title: str = "samples") -> Path:
    """1-D data: histogram of samples (over the data histogram when given); 2-D data: a scatter plot."""
    plt = _plt()
    path = Path(path)
    x = x.reshape(x.shape[0], -1)
    fig, ax = plt.subplots(figsize=(8, 3) if x.shape[1] == 1 else (4, 4))
    if x.shape[1] == 1:
        lo, hi = float(x.min()), float(x.max())
        if data is not None:
            d = data.reshape(-1)
            lo, hi = min(lo, float(d.min())), max(hi, float(d.max()))
            ax.hist(d.numpy(), bins=bins, range=(lo, hi), alpha=0.5, label="data", density=True)
        ax.hist(x[:, 0].numpy(), bins=bins, range=(lo, hi), alpha=0.5, label="samples", density=True)
        ax.set_xlabel("x")
        ax.legend()
    else:
        if data is not None:
            d = data.reshape(data.shape[0], -1)
            ax.scatter(d[:, 0].numpy(), d[:, 1].numpy(), s=2, alpha=0.3, label="data")
        ax.scatter(x[:, 0].numpy(), x[:, 1].numpy(), s=2, alpha=0.5, label="samples")
        ax.set_aspect("equal")
        ax.legend()
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
