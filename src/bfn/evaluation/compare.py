"""`compare_runs`: trained runs (BFN, DDPM, ...) side by side in one Markdown report with PNGs beside it.

For each run: parameters, training wall time and throughput (from RUN/metrics.jsonl), the test-set NLL bound in
nats/image and bits/dim with standard errors, sampling time per image and sample quality at several step counts,
sample grids and evolution strips side by side, and the training curves of all runs on one plot.

Every piece degrades on its own: a missing evaluation module, data that the MNIST classifier cannot read, or a step
count a model cannot take becomes a note in the report instead of an error, and the rest is still written.

A like-for-like reading: a BFN's "inf" bound is L^inf + L^r; a DDPM's is its full T-step variational bound (Ho et
al. 2020, eq. 5); both bound -ln P(x) of the same discrete (or discretized) data in nats. Sampling steps are network
evaluations. Training losses are different objectives (BFN: L^inf in nats; DDPM: L_simple, a squared error), so the
curves compare speed of convergence and wall time, not values.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from bfn.errors import BFNError, ConfigError

REPORT_NAME = "report.md"
RESULTS_NAME = "compare.json"
#: samples of each run shown per grid cell
GRID_N = 36
#: recorded steps of an evolution strip, first and last included
EVOLUTION_K = 10


@dataclass
class Run:
    """One run directory, loaded: its config, EMA model, metrics and what the report says about it."""

    path: Path
    name: str
    cfg: Any
    model: nn.Module
    sampler: str
    metrics: list[dict[str, Any]] = field(default_factory=list)

    @property
    def model_type(self) -> str:
        return str(self.model.config.get("model", {}).get("type") or type(self.model).__name__.lower())

    @property
    def data_name(self) -> str:
        options = dict(self.cfg.data.options)
        return self.cfg.data.name + (f" {options}" if options else "")

    @property
    def max_steps(self) -> int | None:
        """The most sampling steps the model takes (T for a DDPM; None: any)."""
        return getattr(self.model, "timesteps", None)


# --- loading ------------------------------------------------------------------------------------------------------
def sampler_label(run: Run) -> str:
    """The sampler's canonical name: a DDPM's "paper" is its ancestral sampler (Ho et al. 2020, Algorithm 2)."""
    if run.model_type == "ddpm":
        from bfn.samplers.ddpm import ddpm_sampler_name

        return ddpm_sampler_name(run.sampler)
    return run.sampler


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
        from bfn.training.logging import read_metrics

        metrics = read_metrics(path / "metrics.jsonl")
    return Run(path=path, name=name or path.name, cfg=cfg, model=model, sampler=sampler or cfg.sample.sampler,
               metrics=metrics)


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
    if run.model_type == "ddpm":
        return "L_simple (eps MSE)"
    loss = run.model.config.get("model", {}).get("loss", "continuous")
    return "L^inf (nats)" if loss == "continuous" else f"L^{loss} (nats)"


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


# --- likelihood ---------------------------------------------------------------------------------------------------
def nll_results(run: Run, *, steps: Sequence[int | str], repeats: int, limit: int | None, batch_size: int,
                seed: int, device: str, progress: bool) -> dict[str, Any]:
    """`bfn.evaluation.nll.evaluate_nll` on the run's test split; for a DDPM "inf" is its full T-step bound."""
    from bfn.evaluation.nll import evaluate_nll

    result = evaluate_nll(run.model, test_split(run), steps=list(steps), repeats=repeats, batch_size=batch_size,
                          seed=seed, device=device, limit=limit, progress=progress)
    if run.model_type == "ddpm":
        for key, res in result["results"].items():
            res["bound"] = ("full T-step bound" if key == "inf" else f"{key}-step respaced bound") + " (eq. 5)"
    return result


# --- sampling -----------------------------------------------------------------------------------------------------
def display_samples(run: Run, x: Tensor) -> Tensor:
    """Samples in data format -> values in [0, 1] (as the pictures and the classifier read them)."""
    from bfn.viz.grid import data_kind, to_unit_interval

    info = data_kind(run.model)
    return to_unit_interval(x.cpu(), info.kind, num_classes=info.num_classes)


def timed_samples(run: Run, n: int, steps: int, *, batch_size: int, seed: int, progress: bool) -> tuple[Tensor, float]:
    """n samples as [0, 1] values and the wall seconds it took (batches of `batch_size`, one seeded generator)."""
    from tqdm.auto import tqdm

    gen = torch.Generator(device=next(run.model.parameters()).device).manual_seed(seed)
    chunks = []
    t0 = time.perf_counter()
    with tqdm(total=n, desc=f"{run.name}: {steps} steps", disable=not progress, dynamic_ncols=True) as bar:
        for start in range(0, n, batch_size):
            m = min(batch_size, n - start)
            chunks.append(run.model.sample(m, steps, sampler=run.sampler, generator=gen))
            bar.update(m)
    seconds = time.perf_counter() - t0
    return display_samples(run, torch.cat(chunks)), seconds


def reference_images(run: Run, *, limit: int | None, seed: int) -> Tensor:
    """The run's test split as [0, 1] values (binarization drawn from `seed`)."""
    from bfn.evaluation.nll import materialize

    return display_samples(run, materialize(test_split(run), limit=limit, seed=seed))


def sampling_results(run: Run, *, steps: Sequence[int], n: int, batch_size: int, seed: int, quality: bool,
                     classifier: Any, reference: Tensor | None, device: str, progress: bool
                     ) -> tuple[dict[str, Any], dict[int, Tensor]]:
    """Per step count: seconds per image and, when `quality`, `sample_quality` against `reference`; also the first
    GRID_N samples of each step count for the grids."""
    out: dict[str, Any] = {}
    grids: dict[int, Tensor] = {}
    for s in steps:
        if run.max_steps is not None and s > run.max_steps:
            out[str(s)] = {"note": f"n/a: at most {run.max_steps} steps (T)"}
            continue
        samples, seconds = timed_samples(run, n, s, batch_size=batch_size, seed=seed, progress=progress)
        grids[s] = samples[:GRID_N]
        entry: dict[str, Any] = {"n": n, "seconds": seconds, "seconds_per_image": seconds / n}
        if quality and reference is not None:
            try:
                from bfn.evaluation.quality import sample_quality

                entry["quality"] = sample_quality(samples, reference, classifier=classifier, seed=seed, device=device)
            except (ImportError, BFNError) as err:
                entry["quality_note"] = f"skipped: {one_line(err)}"
        out[str(s)] = entry
    return out, grids


# --- pictures -----------------------------------------------------------------------------------------------------
def save_sample_grids(runs: Sequence[Run], grids: Sequence[dict[int, Tensor]], steps: Sequence[int],
                      path: Path) -> Path:
    """One image: a row per step count, a column per run, each cell a captioned grid of samples."""
    from PIL import Image

    from bfn.viz.grid import caption_image, hstack, image_grid, vstack

    rows = []
    for s in steps:
        cells = []
        for run, g in zip(runs, grids, strict=True):
            if s in g:
                cells.append(caption_image(image_grid(g[s], scale=2), f"{run.name}, {s} steps", top=True))
            else:
                blank = Image.new("RGB", (120, 40), "white")
                cells.append(caption_image(blank, f"{run.name}, {s} steps: n/a", top=True))
        rows.append(hstack(cells, gap=12))
    path.parent.mkdir(parents=True, exist_ok=True)
    vstack(rows, gap=12).save(path)
    return path


def save_evolutions(runs: Sequence[Run], path: Path, *, steps: int, n: int = 4, k: int = EVOLUTION_K,
                    seed: int = 0) -> Path:
    """Each run's evolution strip (`bfn.viz.evolution_image`: k steps of n samples), stacked, captioned by run.
    For a DDPM the "input" is x_t and the "output" its predicted x_0."""
    from bfn.viz.evolution import evolution_image, record_sampling
    from bfn.viz.grid import caption_image, data_kind, vstack

    strips = []
    for run in runs:
        s = min(steps, run.max_steps or steps)
        traj = record_sampling(run.model, n, s, k=k, seed=seed, sampler=run.sampler)
        label = f"{run.name} ({run.model_type}, {sampler_label(run)}, {s} steps)"
        strips.append(caption_image(evolution_image(traj, data_kind(run.model)), label, top=True))
    path.parent.mkdir(parents=True, exist_ok=True)
    vstack(strips, gap=16).save(path)
    return path


def save_curves(runs: Sequence[Run], path: Path) -> Path:
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
        label = f"{run.name}: {objective(run)}"
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


# --- the whole report ---------------------------------------------------------------------------------------------
def one_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def attempt(notes: list[str], what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
    """fn(*args, **kwargs), or None with a note when a module is missing or a bfn error says why it cannot run."""
    try:
        return fn(*args, **kwargs)
    except ImportError as err:
        notes.append(f"{what}: skipped, module not available ({one_line(err)})")
    except BFNError as err:
        notes.append(f"{what}: skipped ({one_line(err)})")
    return None


def quality_applies(run: Run) -> str | None:
    """None when bfn's MNIST classifier can read the run's samples, else why not."""
    shape = tuple(getattr(run.model, "data_shape", ()) or run.model.config.get("data", {}).get("shape", ()))
    if shape != (1, 28, 28):
        return f"sample quality needs 28x28 single-channel images; {run.name} has data of shape {shape}"
    return None


def compare_runs(paths: Sequence[str | Path], out_dir: str | Path, *, steps: Sequence[int] = (10, 25, 100, 1000),
                 n: int = 500, nll_steps: Sequence[int | str] = ("inf",), nll_repeats: int = 1,
                 limit: int | None = None, batch_size: int = 250, seed: int = 0, device: str = "cpu",
                 names: Sequence[str] | None = None, samplers: Sequence[str] | None = None, nll: bool = True,
                 quality: bool = True, evolution_steps: int = 100, classifier: Any = None,
                 progress: bool = False) -> dict[str, Any]:
    """Evaluate runs side by side and write `report.md`, `compare.json` and the PNGs into `out_dir`.

    Args:
        paths: run directories written by `bfn train` (two or more, any model types).
        out_dir: where the report goes.
        steps: sampling step counts (network evaluations) for timing, quality and grids.
        n: samples per run and step count.
        nll_steps: bounds to evaluate ("inf": a BFN's L^inf + L^r, a DDPM's full T-step bound).
        nll_repeats: Monte Carlo repeats per test example.
        limit: use only the first `limit` test examples (NLL and quality reference).
        batch_size: examples per forward pass and per sampling batch.
        seed: makes every number reproducible.
        device: where to evaluate.
        names: labels of the runs (default: folder names).
        samplers: one sampler name per run (default: each run's sample.sampler).
        nll, quality: switch those sections off.
        evolution_steps: sampling steps of the evolution strips (k = 10 of them shown).
        classifier: a `bfn.evaluation.MnistCNN` for the quality metrics (default: the cached, trained one).
        progress: show progress bars.

    Returns:
        The results (also in compare.json), with "report" the path of report.md.
    """
    paths = [Path(p) for p in paths]
    if len(paths) < 1:
        raise ConfigError("give at least one run directory (two or more to compare)")
    steps = sorted({int(s) for s in steps})
    if not steps or steps[0] < 1:
        raise ConfigError(f"sampling steps must be positive integers, got {steps}")
    for key, value in (("n", n), ("nll_repeats", nll_repeats), ("batch_size", batch_size),
                       ("evolution_steps", evolution_steps)):
        if value < 1:
            raise ConfigError(f"{key} must be a positive integer, got {value}")
    if samplers is not None and len(samplers) != len(paths):
        raise ConfigError(f"give one sampler per run: {len(samplers)} samplers for {len(paths)} runs")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    labels = unique_names(paths, names)
    runs = [load_run(p, device=device, name=label, sampler=None if samplers is None else samplers[j])
            for j, (p, label) in enumerate(zip(paths, labels, strict=True))]
    notes: list[str] = []
    if not same_data(runs):
        notes.append("the runs use different datasets: their NLLs and sample qualities are not comparable")
    t0 = time.perf_counter()
    entries: list[dict[str, Any]] = []
    grids: list[dict[int, Tensor]] = []
    for run in runs:
        entry: dict[str, Any] = {"name": run.name, "path": str(run.path), "type": run.model_type,
                                 "data": run.data_name, "parameters": parameter_count(run.model),
                                 "sampler": attempt(notes, f"{run.name}: sampler", sampler_label, run) or run.sampler,
                                 "model_step": run.model.config.get("step"), "train": training_summary(run)}
        if nll:
            entry["nll"] = attempt(notes, f"{run.name}: NLL", nll_results, run, steps=nll_steps, repeats=nll_repeats,
                                   limit=limit, batch_size=batch_size, seed=seed, device=device, progress=progress)
        reference, why = None, quality_applies(run) if quality else "switched off"
        if quality and why is None:
            reference = attempt(notes, f"{run.name}: quality reference", reference_images, run, limit=limit, seed=seed)
        elif quality and why:
            notes.append(f"{run.name}: {why}")
        sampled = attempt(notes, f"{run.name}: sampling", sampling_results, run, steps=steps, n=n,
                          batch_size=batch_size, seed=seed, quality=quality and reference is not None,
                          classifier=classifier, reference=reference, device=device, progress=progress)
        entry["sampling"], g = sampled if sampled is not None else ({}, {})
        grids.append(g)
        entries.append(entry)
    figures: dict[str, str] = {}
    if any(grids):
        path = attempt(notes, "sample grids", save_sample_grids, runs, grids, steps, out_dir / "samples.png")
        if path:
            figures["samples"] = path.name
    path = attempt(notes, "evolution strips", save_evolutions, runs, out_dir / "evolution.png",
                   steps=evolution_steps, seed=seed)
    if path:
        figures["evolution"] = path.name
    path = attempt(notes, "training curves", save_curves, runs, out_dir / "curves.png")
    if path:
        figures["curves"] = path.name
    result = {"runs": entries, "figures": figures, "notes": notes,
              "settings": {"steps": steps, "n": n, "nll_steps": [str(s) for s in nll_steps],
                           "nll_repeats": nll_repeats, "limit": limit, "batch_size": batch_size, "seed": seed,
                           "device": device, "evolution_steps": evolution_steps, "nll": nll, "quality": quality},
              "wall_seconds": time.perf_counter() - t0}
    from bfn.models.hub import atomic_write_text

    atomic_write_text(out_dir / RESULTS_NAME, json.dumps(result, indent=2, default=float) + "\n")
    report = out_dir / REPORT_NAME
    atomic_write_text(report, render_markdown(result))
    result["report"] = str(report)
    return result


# --- Markdown -----------------------------------------------------------------------------------------------------
def _num(value: Any, digits: int = 2) -> str:
    if not isinstance(value, int | float) or not math.isfinite(value):
        return "–"
    return f"{value:,.{digits}f}"


def _pm(value: Any, se: Any, digits: int) -> str:
    if not isinstance(se, int | float) or not math.isfinite(se):
        return _num(value, digits)
    return f"{_num(value, digits)} ± {_num(se, digits)}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def _duration(seconds: Any) -> str:
    if not isinstance(seconds, int | float) or not math.isfinite(seconds):
        return "–"
    return f"{seconds / 60:.1f} min" if seconds >= 120 else f"{seconds:.1f} s"


def render_markdown(result: dict[str, Any]) -> str:
    """The report: runs, NLL, sampling time and quality, pictures, notes."""
    runs, settings = result["runs"], result["settings"]
    listed = ", ".join(f"`{r['name']}` ({r['type']})" for r in runs)
    lines = ["# BFN vs diffusion: side by side", "",
             f"Runs: {listed}. Sampling steps count network evaluations; ± is one standard error over test examples.",
             ""]
    lines += ["## Runs", ""]
    rows = []
    for r in runs:
        t = r["train"]
        rows.append([r["name"], r["type"], r["data"], f"{r['parameters']:,}", str(t.get("steps", "–")),
                     _duration(t.get("wall_seconds")), _num(t.get("images_per_s"), 0), r["sampler"],
                     f"{_num(t.get('final_loss_per_dim'), 4)} {t.get('objective', '')}".strip()])
    lines += _table(["run", "model", "data", "parameters", "train steps", "train wall time", "images/s", "sampler",
                     "last train loss/dim"], rows)
    lines += ["", "## Test-set likelihood", ""]
    if not settings["nll"]:
        lines.append("Not evaluated (switched off).")
    else:
        rows = []
        for r in runs:
            nll = r.get("nll")
            if not nll:
                rows.append([r["name"], "–", "skipped (see notes)", "–", "–", "–"])
                continue
            for res in nll["results"].values():
                rows.append([r["name"], res["bound"], _pm(res["nats"], res["nats_se"], 2),
                             _pm(res["bits_per_dim"], res["bits_per_dim_se"], 4), str(nll["n_examples"]),
                             str(nll["repeats"])])
        lines += _table(["run", "bound", "nats/image", "bits/dim", "test examples", "repeats"], rows)
        if any(r["type"] == "ddpm" for r in runs):
            lines += ["", "A DDPM's bound is estimated with one diffusion step per example and repeat (uniform t, "
                          "times T, Ho et al. 2020, eq. 5); the terms of small t dominate, so the estimate is "
                          "heavy-tailed: raise --nll-repeats for a tighter error bar."]
        uniform = next((r["nll"]["uniform"] for r in runs if r.get("nll") and r["nll"].get("uniform")), None)
        if uniform:
            lines += ["", f"For scale: a uniform distribution over the {uniform['values']} values costs "
                          f"{uniform['nats']:.1f} nats/image ({uniform['bits_per_dim']:.3f} bits/dim)."]
    lines += ["", "## Sampling: time and quality", "",
              f"{settings['n']} samples per run and step count; quality in the features of bfn's MNIST classifier "
              "against the test split (FID and KID lower is better; precision and recall higher).", ""]
    rows = []
    for s in settings["steps"]:
        for r in runs:
            e = r["sampling"].get(str(s))
            if e is None:
                rows.append([str(s), r["name"], "skipped (see notes)", "", "", "", "", ""])
                continue
            if "note" in e:
                rows.append([str(s), r["name"], e["note"], "", "", "", "", ""])
                continue
            q = e.get("quality")
            ms = f"{1000 * e['seconds_per_image']:.1f}"
            if q is None:
                rows.append([str(s), r["name"], ms, e.get("quality_note", "–"), "", "", "", ""])
                continue
            rows.append([str(s), r["name"], ms, _num(q["fid"], 2), _pm(q["kid"], q.get("kid_std"), 4),
                         _num(q["precision"], 3), _num(q["recall"], 3), _num(q.get("confidence"), 3)])
    lines += _table(["steps", "run", "ms/image", "FID", "KID", "precision", "recall", "confidence"], rows)
    figures = result["figures"]
    captions = {"samples": "Samples: a row per step count, a column per run.",
                "evolution": f"Evolution over {EVOLUTION_K} of {settings['evolution_steps']} steps: per sample, the "
                             "input (BFN: input-distribution mean; DDPM: x_t) and the output prediction (BFN: output "
                             "mean; DDPM: predicted x_0), then the sample.",
                "curves": "Training loss per dim against step and wall time. BFN logs L^inf in nats, DDPM L_simple "
                          "(a squared error): compare shapes and speed, not values."}
    for key, title in (("samples", "Samples"), ("evolution", "Evolution"), ("curves", "Training curves")):
        if key in figures:
            lines += ["", f"## {title}", "", captions[key], "", f"![{title}]({figures[key]})"]
    if result["notes"]:
        lines += ["", "## Notes", ""] + [f"- {note}" for note in result["notes"]]
    lines += ["", f"Settings: {json.dumps(settings)}. Wall time of this report: {_duration(result['wall_seconds'])}.",
              ""]
    return "\n".join(lines)
