"""1-D continuous data: input-mean trajectories over t drawn on the Bayesian flow distribution p_F(mu | x; t)
(Graves et al. 2023, Figure 1), with the sample histogram over the data histogram beside it."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from bfn.errors import ConfigError
from bfn.flows.base import BayesianFlow
from bfn.models.base import GenerativeModel
from bfn.viz.evolution import Trajectory, record_sampling, toy_limits

#: orders of magnitude of density shown below the maximum on the log colour scale
DENSITY_DECADES = 4


def flow_density(flow: Any, data: Tensor, *, times: Tensor, edges: Tensor, max_points: int = 2000) -> Tensor:
    """p_F(mu | x; t) = N(mu; gamma(t) x, gamma(t) (1 - gamma(t))) averaged over the data points x (§4.4), as the
    mass of each mu-bin [edges_j, edges_j+1) over its width: a density of shape [T, M] (M = len(edges) - 1).

    Bin masses rather than point values keep the narrow flow near t = 0 and t = 1 visible on any grid.
    """
    x = data.detach().reshape(-1).double().cpu()
    if x.numel() > max_points:
        x = x[torch.linspace(0, x.numel() - 1, max_points).round().long()]
    edges = edges.double().cpu()
    widths = edges[1:] - edges[:-1]
    gamma = flow.gamma(times.double().cpu())
    std = (gamma * (1 - gamma)).clamp_min(0).sqrt().clamp_min(1e-12)
    chunk = max(1, 2_000_000 // (edges.numel() * x.numel()))  # times per batch: a few large ops, not many small
    rows = []
    for g, s in zip(gamma.split(chunk), std.split(chunk), strict=True):
        z = (edges[None, :, None] - g[:, None, None] * x[None, None, :]) / (s[:, None, None] * math.sqrt(2))
        cdf = torch.erf(z).mean(-1)  # [chunk, M+1]: the mean CDF over data points, times 2, minus 1
        rows.append(0.5 * (cdf[:, 1:] - cdf[:, :-1]) / widths)
    return torch.cat(rows).float()


@torch.no_grad()
def bayesian_flow_paths(flow: Any, x: float | Tensor, *, steps: int = 100, n: int = 20, seed: int = 0
                        ) -> tuple[Tensor, Tensor]:
    """Input means of `n` runs of the true Bayesian flow for data x (sender samples of x itself, no network):
    times [steps + 1] from 0 to 1 and means [steps + 1, n]."""
    gen = torch.Generator().manual_seed(seed)
    target = torch.full((n, 1), float(x)) if not isinstance(x, Tensor) else x.reshape(-1, 1).float().expand(n, 1)
    theta = flow.prior((n, 1))
    means = [theta.mean[:, 0].clone()]
    for i in range(1, steps + 1):
        alpha = flow.accuracy(i, steps)
        theta = flow.update(theta, flow.sender(target, alpha, generator=gen), alpha)
        means.append(theta.mean[:, 0].clone())
    return torch.linspace(0, 1, steps + 1), torch.stack(means)


def flow_figure(flow: Any, *, data: Tensor | None = None, paths: tuple[Tensor, Tensor] | None = None,
                samples: Tensor | None = None, limits: tuple[float, float] | None = None, resolution: int = 200,
                log: bool = True, title: str | None = None) -> Any:
    """The figure: the (log-scale) flow density of `data` over (t, mu), input-mean `paths` (times [T],
    means [T, L]) on top, and, beside it, the histogram of final `samples` over that of `data`."""
    from matplotlib.colors import LogNorm, Normalize

    from bfn.viz.plots import new_figure

    limits = limits or toy_limits(data, None if paths is None else paths[1], samples)
    side = samples is not None
    ratios = [4.0] + ([1.0] if side else []) + ([0.08] if data is not None else [])
    fig = new_figure(8 + 2 * side, 4)
    grid = fig.add_gridspec(1, len(ratios), width_ratios=ratios, wspace=0.15)
    ax = fig.add_subplot(grid[0, 0])
    if data is not None:
        times = (torch.arange(resolution) + 0.5) / resolution
        edges = torch.linspace(limits[0], limits[1], resolution + 1)
        density = flow_density(flow, data, times=times, edges=edges)
        top, floor = float(density.max()), float(density.max()) * 10.0**-DENSITY_DECADES
        norm = LogNorm(vmin=floor, vmax=top) if log else Normalize(vmin=0, vmax=top)
        image = ax.imshow(density.T.clamp_min(floor).numpy(), origin="lower", aspect="auto", cmap="viridis",
                          extent=(0.0, 1.0, limits[0], limits[1]), norm=norm, interpolation="nearest")
        fig.colorbar(image, cax=fig.add_subplot(grid[0, -1]), label="p_F(mu | x; t)" + (", log scale" if log else ""))
    if paths is not None:
        t, mu = paths
        ax.plot(t.numpy(), mu.numpy(), color="white" if data is not None else "C1", lw=0.8, alpha=0.8)
    if samples is not None:
        s = samples.reshape(-1)[: 0 if paths is None else paths[1].shape[1]]
        ax.scatter(torch.ones_like(s).numpy(), s.numpy(), s=8, color="C3", zorder=3, clip_on=False)
    ax.set_xlim(0, 1)
    ax.set_ylim(*limits)
    ax.set_xlabel("t")
    ax.set_ylabel("input mean mu")
    ax.set_title(title or "Bayesian flow distribution and input-mean trajectories", fontsize=10)
    if side:
        hist = fig.add_subplot(grid[0, 1], sharey=ax)
        bins = torch.linspace(limits[0], limits[1], 81).numpy()
        if data is not None:
            hist.hist(data.reshape(-1).numpy(), bins=bins, orientation="horizontal", density=True, alpha=0.5,
                      color="C0", label="data")
        if samples is not None:
            hist.hist(samples.reshape(-1).clamp(*limits).numpy(), bins=bins, orientation="horizontal",
                      density=True, alpha=0.5, color="C1", label="samples")
        hist.tick_params(labelleft=False)
        hist.set_xlabel("density")
        hist.legend(fontsize=8, loc="upper right")
    return fig


def check_1d(model: GenerativeModel) -> BayesianFlow:
    """The model's Bayesian flow, when it draws 1-D continuous data (one-line ConfigError otherwise)."""
    info = model.data
    flow = model.bayesian_flow()
    if flow is None or info.kind == "discrete" or info.shape != (1,):
        raise ConfigError(f"flow trajectories need a BFN on 1-D continuous data; this is a {model.family} model of "
                          f"{info.kind} data of shape {info.shape}; use --evolution or --gif instead")
    return flow


def save_flow_trajectories(model: GenerativeModel, path: str | Path, *, data: Tensor | None = None, n: int = 1000,
                           steps: int = 100, lines: int = 20, seed: int = 0, log: bool = True,
                           **sample_kwargs: Any) -> Path:
    """Sample `n` examples of 1-D data recording every step, and draw the input means of `lines` of them over
    the flow density of `data` (when given), with the sample histogram over the data histogram."""
    from bfn.viz.plots import save_figure

    flow = check_1d(model)
    traj: Trajectory = record_sampling(model, n, steps, seed=seed, **sample_kwargs)
    inputs, _ = traj.stacked()  # [T, N, 1]
    times = torch.tensor(traj.times)
    fig = flow_figure(flow, data=None if data is None else data.detach().cpu(),
                      paths=(times, inputs[:, :lines, 0]), samples=traj.final, log=log,
                      title=f"{lines} of {n} samples, {steps} steps: input mean over t")
    return save_figure(fig, path)


def save_flow_density(flow: Any, x: float | Tensor, path: str | Path, *, paths: int = 20, steps: int = 100,
                      seed: int = 0, log: bool = True) -> Path:
    """The paper's Figure 1: p_F(mu | x; t) for one data point x (or averaged over a data tensor), with `paths`
    input-mean trajectories of the exact Bayesian flow (no network)."""
    from bfn.viz.plots import save_figure

    data = torch.as_tensor(x, dtype=torch.float32).reshape(-1)
    route = bayesian_flow_paths(flow, data[: 1] if data.numel() == 1 else data[:paths], steps=steps,
                                n=paths if data.numel() == 1 else min(paths, data.numel()), seed=seed)
    label = f"x = {float(data[0]):.2f}" if data.numel() == 1 else f"{data.numel()} data points"
    fig = flow_figure(flow, data=data, paths=route, log=log, title=f"Bayesian flow for {label}")
    return save_figure(fig, path)
