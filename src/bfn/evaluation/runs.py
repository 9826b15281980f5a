"""Trained runs, loaded for evaluation: config, EMA model, metrics, test split, training summary. Shared by
`bfn eval` and `bfn compare`."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from bfn.errors import ConfigError
from bfn.models.base import GenerativeModel


@dataclass
class Run:
    """One run directory, loaded: its config, EMA model, metrics and what the report says about it."""

    path: Path
    name: str
    cfg: Any
    model: GenerativeModel
    sampler: str
    metrics: list[dict[str, Any]] = field(default_factory=list)

    @property
    def model_type(self) -> str:
        """The model family (bfn, ddpm, vae, ...)."""
        return self.model.family

    @property
    def data_name(self) -> str:
        options = dict(self.cfg.data.options)
        return self.cfg.data.name + (f" {options}" if options else "")

    @property
    def max_steps(self) -> int | None:
        """The most sampling steps the model takes (T for a DDPM; None: any)."""
        return self.model.capabilities.max_steps


# --- loading ------------------------------------------------------------------------------------------------------
def sampler_label(run: Run) -> str:
    """The sampler the run samples with: the one asked for, else the model's default."""
    caps = run.model.capabilities
    return run.sampler if run.sampler in caps.samplers else caps.default_sampler


def load_run(path: str | Path, *, device: str = "cpu", name: str | None = None, sampler: str | None = None) -> Run:
    """A run directory written by `bfn train`: config.yaml, the EMA weights and metrics.jsonl (optional)."""
    from bfn.config import load_config
    from bfn.errors import CheckpointError
    from bfn.models import from_pretrained

    path = Path(path)
    if not (path / "config.yaml").is_file():
        raise CheckpointError(f"{path / 'config.yaml'} not found; give run directories written by `bfn train`")
    cfg = load_config(str(path / "config.yaml"))
    model = from_pretrained(path, device=device).eval()
    metrics: list[dict[str, Any]] = []
    if (path / "metrics.jsonl").is_file():
        from bfn.utils.io import read_metrics

        metrics = read_metrics(path / "metrics.jsonl")
    caps = model.capabilities
    chosen = sampler or cfg.sample.sampler
    if chosen not in caps.samplers:
        if sampler is not None:
            raise ConfigError(f"{path.name}: unknown sampler {sampler!r} for a {model.family} model; choose one of "
                              f"{', '.join(caps.samplers)}")
        chosen = caps.default_sampler  # e.g. a DDPM's config names the BFN default "paper"
    return Run(path=path, name=name or path.name, cfg=cfg, model=model, sampler=chosen, metrics=metrics)


def unique_names(paths: Sequence[Path], names: Sequence[str] | None) -> list[str]:
    """Labels of the runs: the given names, else the folder names (made unique with their parents)."""
    if names:
        if len(names) != len(paths):
            raise ConfigError(f"give one name per run: {len(names)} names for {len(paths)} runs")
        return list(names)
    out = [p.name for p in paths]
    if len(set(out)) < len(out):
        out = [f"{p.parent.name}/{p.name}" for p in paths]
    return out


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# --- training -----------------------------------------------------------------------------------------------------
def objective(run: Run) -> str:
    """What the run's logged training loss is."""
    return run.model.training_objective()


def training_summary(run: Run) -> dict[str, Any]:
    """Steps, wall time, throughput and the last logged loss per dim from metrics.jsonl (empty without it)."""
    records = [r for r in run.metrics if isinstance(r.get("step"), int | float)]
    if not records:
        return {"note": "no metrics.jsonl"}
    last = max(records, key=lambda r: r["step"])
    steps = int(last["step"])
    wall = float(last.get("elapsed_s") or math.nan)
    world = int(last.get("world_size") or 1)
    images = steps * run.cfg.train.batch_size * world
    rates = [float(r["images_per_s"]) for r in records if isinstance(r.get("images_per_s"), int | float)]
    return {"steps": steps, "wall_seconds": wall, "images": images,
            "images_per_s": images / wall if wall and math.isfinite(wall) and wall > 0 else math.nan,
            "median_logged_images_per_s": float(torch.tensor(rates).median()) if rates else math.nan,
            "final_loss_per_dim": float(last.get("loss_per_dim", math.nan)), "objective": objective(run)}


# --- test data ----------------------------------------------------------------------------------------------------
def test_split(run: Run) -> Any:
    """The run's test split, loaded with its data options."""
    from bfn.data import load_dataset

    return load_dataset(run.cfg.data.name, "test", root=run.cfg.data.root, **run.cfg.data.options)[0]


def same_data(runs: Sequence[Run]) -> bool:
    return len({(r.cfg.data.name, json.dumps(dict(r.cfg.data.options), sort_keys=True)) for r in runs}) == 1
