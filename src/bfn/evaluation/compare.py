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
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from bfn.errors import BFNError, ConfigError, first_line
from bfn.evaluation.markdown import render_markdown
from bfn.evaluation.runs import Run, load_run, parameter_count, same_data, test_split, training_summary, unique_names
from bfn.viz.compare import save_curves, save_evolutions, save_sample_grids

REPORT_NAME = "report.md"
RESULTS_NAME = "compare.json"
#: samples of each run shown per grid cell
GRID_N = 36


# --- likelihood ---------------------------------------------------------------------------------------------------
def nll_results(run: Run, *, steps: Sequence[int | str], repeats: int, limit: int | None, batch_size: int,
                seed: int, device: str, progress: bool) -> dict[str, Any]:
    """`bfn.evaluation.nll.evaluate_nll` on the run's test split; for a DDPM "inf" is its full T-step bound."""
    from bfn.evaluation.nll import evaluate_nll

    result = evaluate_nll(run.model, test_split(run), steps=list(steps), repeats=repeats, batch_size=batch_size,
                          seed=seed, device=device, limit=limit, progress=progress)
    return result


# --- sampling -----------------------------------------------------------------------------------------------------
def display_samples(run: Run, x: Tensor) -> Tensor:
    """Samples in data format -> values in [0, 1] (as the pictures and the classifier read them)."""
    from bfn.viz.grid import to_unit_interval

    info = run.model.data
    return to_unit_interval(x.cpu(), info.kind, num_classes=info.classes)


def timed_samples(run: Run, n: int, steps: int | None, *, batch_size: int, seed: int,
                  progress: bool) -> tuple[Tensor, float]:
    """n samples as [0, 1] values and the wall seconds it took (batches of `batch_size`, one seeded generator)."""
    from tqdm.auto import tqdm

    gen = torch.Generator(device=run.model.device).manual_seed(seed)
    chunks = []
    t0 = time.perf_counter()
    desc = f"{run.name}: {steps or 'one-shot'} steps"
    with tqdm(total=n, desc=desc, disable=not progress, dynamic_ncols=True) as bar:
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


def sampling_results(run: Run, *, steps: Sequence[int] | None, n: int, batch_size: int, seed: int, quality: bool,
                     classifier: Any, reference: Tensor | None, device: str, progress: bool
                     ) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """Per step count (or, with `steps` None, at the model's usual step count under the key "usual"): seconds per
    image and, when `quality`, `sample_quality` against `reference`; also the first GRID_N samples of each for the
    grids. A one-shot generator (no step count) is sampled once, under "usual"."""
    caps = run.model.capabilities
    wanted: list[tuple[str, int | None]]
    if steps is None or caps.default_steps is None:
        wanted = [("usual", caps.default_steps)]
    else:
        wanted = [(str(s), s) for s in steps]
    out: dict[str, Any] = {}
    grids: dict[str, Tensor] = {}
    for key, s in wanted:
        if s is not None and run.max_steps is not None and s > run.max_steps:
            out[key] = {"note": f"n/a: at most {run.max_steps} steps"}
            continue
        samples, seconds = timed_samples(run, n, s, batch_size=batch_size, seed=seed, progress=progress)
        grids[key] = samples[:GRID_N]
        entry: dict[str, Any] = {"n": n, "steps": s, "seconds": seconds, "seconds_per_image": seconds / n}
        if quality and reference is not None:
            try:
                from bfn.evaluation.quality import sample_quality

                entry["quality"] = sample_quality(samples, reference, classifier=classifier, seed=seed, device=device)
            except (ImportError, BFNError) as err:
                entry["quality_note"] = f"skipped: {first_line(err)}"
        out[key] = entry
    return out, grids


def attempt(notes: list[str], what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
    """fn(*args, **kwargs), or None with a note when a module is missing or a bfn error says why it cannot run."""
    try:
        return fn(*args, **kwargs)
    except ImportError as err:
        notes.append(f"{what}: skipped, module not available ({first_line(err)})")
    except BFNError as err:
        notes.append(f"{what}: skipped ({first_line(err)})")
    return None


def quality_applies(run: Run) -> str | None:
    """None when bfn's MNIST classifier can read the run's samples, else why not."""
    shape = run.model.data.shape
    if shape != (1, 28, 28):
        return f"sample quality needs 28x28 single-channel images; {run.name} has data of shape {shape}"
    return None


def compare_runs(paths: Sequence[str | Path], out_dir: str | Path, *, steps: Sequence[int] | None = None,
                 n: int = 200, nll_steps: Sequence[int | str] = ("inf",), nll_repeats: int = 1,
                 limit: int | None = None, batch_size: int = 250, seed: int = 0, device: str = "cpu",
                 names: Sequence[str] | None = None, samplers: Sequence[str] | None = None, nll: bool = True,
                 quality: bool = True, evolution_steps: int = 100, classifier: Any = None,
                 progress: bool = False) -> dict[str, Any]:
    """Evaluate runs side by side and write `report.md`, `compare.json` and the PNGs into `out_dir`.

    Args:
        paths: run directories written by `bfn train` (two or more, any model types).
        out_dir: where the report goes.
        steps: sampling step counts (network evaluations) for timing, quality and grids; None: each model's usual
            count (`capabilities.default_steps`; one-shot generators sample once).
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
    run_paths = [Path(p) for p in paths]
    if len(run_paths) < 1:
        raise ConfigError("give at least one run directory (two or more to compare)")
    if steps is not None:
        steps = sorted({int(s) for s in steps})
        if not steps or steps[0] < 1:
            raise ConfigError(f"sampling steps must be positive integers, got {steps}")
    for key, value in (("n", n), ("nll_repeats", nll_repeats), ("batch_size", batch_size),
                       ("evolution_steps", evolution_steps)):
        if value < 1:
            raise ConfigError(f"{key} must be a positive integer, got {value}")
    if samplers is not None and len(samplers) != len(run_paths):
        raise ConfigError(f"give one sampler per run: {len(samplers)} samplers for {len(run_paths)} runs")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    labels = unique_names(run_paths, names)
    runs = [load_run(p, device=device, name=label, sampler=None if samplers is None else samplers[j])
            for j, (p, label) in enumerate(zip(run_paths, labels, strict=True))]
    notes: list[str] = []
    if not same_data(runs):
        listed = ", ".join(f"{r.name}: {r.data_name}" for r in runs)
        raise ConfigError(f"the runs were trained on different data ({listed}); compare runs of one dataset")
    t0 = time.perf_counter()
    entries: list[dict[str, Any]] = []
    grids: list[dict[str, Tensor]] = []
    for run in runs:
        entry: dict[str, Any] = {"name": run.name, "path": str(run.path), "type": run.model.family,
                                 "likelihood": run.model.capabilities.likelihood,
                                 "data": run.data_name, "parameters": parameter_count(run.model),
                                 "sampler": run.sampler,
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
        keys = ["usual"] if steps is None else [str(s) for s in steps]
        path = attempt(notes, "sample grids", save_sample_grids, runs, grids, keys, out_dir / "samples.png")
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
              "settings": {"steps": ["usual"] if steps is None else steps,
                           "n": n, "nll_steps": [str(s) for s in nll_steps],
                           "nll_repeats": nll_repeats, "limit": limit, "batch_size": batch_size, "seed": seed,
                           "device": device, "evolution_steps": evolution_steps, "nll": nll, "quality": quality},
              "wall_seconds": time.perf_counter() - t0}
    from bfn.utils.io import atomic_write_text

    atomic_write_text(out_dir / RESULTS_NAME, json.dumps(result, indent=2, default=float) + "\n")
    report = out_dir / REPORT_NAME
    atomic_write_text(report, render_markdown(result))
    result["report"] = str(report)
    return result


