"""Test-set likelihood: per-example negative log-likelihood bounds in nats, nats/dim and bits/dim, with errors.

For every example the model gives an unbiased Monte Carlo estimate of an upper bound on -ln p(x): L^n(x) + L^r(x)
for n steps, or L^inf(x) + L^r(x) in continuous time (Graves et al. 2023, §3.10); for a DDPM the variational bound
of Ho et al. 2020, eq. (5). `evaluate_nll` repeats that R times, averages the R estimates of each example, and
reports the mean over examples with two errors:

- `nats_se`, the standard error over examples (the standard deviation of the per-example averages over sqrt(N)):
  it holds both the Monte Carlo noise that R repeats leave and the real spread between examples, so it is the
  error bar for "this model on this data distribution";
- `nats_mc_se`, the Monte Carlo standard error of the test-set mean (the spread of the R repeat means over
  sqrt(R)), the error bar for "this model on these N examples", the one the BFN paper's evaluation reports.

Every `GenerativeModel` has `nll_bounds(x, steps, u=..., generator=...)`, all step counts in one call per batch:
the base class calls `nll` per step count, BFN and DDPM override it with the variance reductions described there
and in `evaluate_nll`. Dynamically binarized data are binarized once, from a generator seeded by `seed`, and every
repeat evaluates that one test set (`redraw_data=True` draws it afresh per repeat: the repeats' spread then also
holds the binarization noise, which is not an error of the estimator).
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from bfn.errors import ConfigError, DataError
from bfn.models.base import GenerativeModel
from bfn.utils.steps import Steps, parse_step_list

LN2 = math.log(2.0)
EVAL_NAME = "eval.json"



# --- arguments -------------------------------------------------------------------------------------------
def parse_steps(steps: Any) -> list[Steps]:
    """Step counts as a list of positive ints and "inf" (continuous time): "10,100,inf" or [10, "inf"]."""
    return parse_step_list(steps)


def derive_seed(seed: int, *keys: Any) -> int:
    """A 63-bit seed from `seed` and keys (what it is for, the repeat index): separate, reproducible streams."""
    digest = hashlib.sha256(repr((int(seed), *keys)).encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


# --- data -----------------------------------------------------------------------------------------------
def _first(item: Any) -> Any:
    return item[0] if isinstance(item, tuple | list) else item


def materialize(data: Any, *, limit: int | None = None, seed: int = 0) -> Tensor:
    """The examples of `data` as one tensor [N, *S], the dataset's random draws (dynamic binarization) taken
    from a generator seeded by `seed`, so that a seed always gives the same binarization.

    `data` is a tensor (used as is) or a dataset of (example, label) items from `bfn.data`: grey-level image
    datasets are binarized or binned in one vectorised step; other datasets are read item by item with their
    `generator` (and the global torch RNG) seeded.
    """
    from bfn.data.common import GreyImages, binarize

    if isinstance(data, Tensor):
        return data[:limit] if limit is not None else data
    n = len(data) if limit is None else min(len(data), limit)
    gen = torch.Generator().manual_seed(seed)
    if isinstance(data, GreyImages):
        grey = data.images[:n]
        return binarize(grey, gen) if data.mode == "binarized" else data.table[grey.long()]
    had_generator = hasattr(data, "generator")
    old = getattr(data, "generator", None)
    try:
        if had_generator:
            data.generator = gen
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return torch.stack([torch.as_tensor(_first(data[i])) for i in range(n)])
    finally:
        if had_generator:
            data.generator = old


def stratified_uniforms(n: int, generator: torch.Generator) -> Tensor:
    """u_i = (pi(i) + v) / n, float64 [n]: pi a random permutation of 0..n-1, v ~ U(0, 1). Every u_i is U(0, 1)
    (pi(i) is uniform on 0..n-1 and v uniform within its stratum) and the n values fall one in each interval
    [k/n, (k+1)/n): a randomly shifted, randomly assigned lattice (e.g. Owen, "Monte Carlo theory, methods and
    examples", §10.1)."""
    perm = torch.randperm(n, generator=generator).double()
    v = torch.rand((), generator=generator, dtype=torch.float64)
    return (perm + v) / n


def num_dims(x: Tensor) -> int:
    """Variables per example (784 for MNIST, 3072 for CIFAR-10, the length of a text sequence)."""
    return int(x[0].numel())


def uniform_reference(model: Any, dims: int) -> dict[str, Any] | None:
    """-ln p(x) of the uniform distribution over the data's values, for context: dims ln K for K classes (784 ln 2
    = 543.4 nats for binarized MNIST) or K bins; None for continuous data (no finite reference)."""
    k = model.data.levels
    if not k:
        return None
    nats = dims * math.log(k)
    return {"values": int(k), "nats": nats, "nats_per_dim": math.log(k), "bits_per_dim": math.log2(k)}


# --- the estimate ---------------------------------------------------------------------------------------
def _check_finite(model: GenerativeModel, out: Tensor, steps: Steps) -> Tensor:
    if not torch.isfinite(out).all():
        bad = int((~out.isfinite()).sum())
        raise DataError(f"the {model.nll_name(steps)} estimate is not finite for {bad} examples; check the model's "
                        "weights (a diverged run?)")
    return out


def summarize(per_example: Tensor, dims: int) -> dict[str, float | None]:
    """Mean over examples and its standard error, in nats/example, nats/dim and bits/dim (bits = nats / ln 2 /
    dims exactly); the errors are None for a single example."""
    v = per_example.double()
    mean = float(v.mean())
    if v.numel() < 2:
        return {"nats": mean, "nats_se": None, "nats_per_dim": mean / dims, "nats_per_dim_se": None,
                "bits_per_dim": mean / LN2 / dims, "bits_per_dim_se": None}
    se = float(v.std(unbiased=True)) / math.sqrt(v.numel())
    return {"nats": mean, "nats_se": se, "nats_per_dim": mean / dims, "nats_per_dim_se": se / dims,
            "bits_per_dim": mean / LN2 / dims, "bits_per_dim_se": se / LN2 / dims}


def se_floor(stacked: Tensor) -> float | None:
    """The standard error over examples that infinitely many repeats would leave, from R repeats [R, N]: the real
    spread between the examples' bounds, sqrt(max(0, Var_e(mean_r) - E_e(Var_r) / R) / N) (the variance of the
    per-example R-averages less their Monte Carlo part, each example's repeat variance over R). No estimator of
    the bounds can bring the standard error over examples below it. None for R < 2 or N < 2."""
    r, n = stacked.shape
    if r < 2 or n < 2:
        return None
    between = float(stacked.mean(0).var(unbiased=True))
    within = float(stacked.var(0, unbiased=True).mean())
    return math.sqrt(max(0.0, between - within / r) / n)


@torch.no_grad()
def evaluate_nll(model: GenerativeModel, data: Any, *, steps: str | Steps | Sequence[Steps] = ("inf",),
                 repeats: int = 1, batch_size: int = 256, seed: int = 0, device: str | torch.device | None = None,
                 limit: int | None = None, progress: bool = False, per_example: bool = False,
                 strata: int = 16, variance_reduction: bool = True, redraw_data: bool = False,
                 pilot_size: int = 32) -> dict[str, Any]:
    """Negative log-likelihood bounds of `model` on `data` for each step count (ints and/or "inf").

    Args:
        model: anything with `nll(x, steps, generator=...)` returning per-example nats [B] (BFN, DDPM).
        data: a tensor [N, *S] of examples, or a dataset (see `materialize`); a dynamically binarized dataset is
            binarized once (from `seed`) and that test set is used in every repeat.
        steps: step counts n (the bound L^n + L^r) and/or "inf" (L^inf + L^r), e.g. [10, 100, 784, "inf"].
        repeats: R independent Monte Carlo repeats per example (fresh times and flow samples each time).
        batch_size: examples per forward pass.
        seed: makes the result reproducible (same seed, data and batch size: the same numbers).
        device: where to compute (default: the model's device).
        limit: use only the first `limit` examples.
        progress: show a progress bar.
        per_example: also return each result's per-example R-averages as a tensor [N] ("per_example"; not JSON),
            e.g. for paired comparisons of step counts or of two models on the same examples.
        strata: stratified sender draws per variable for the n-step KL of a BFN (see `BFN.nll_bounds`).
        variance_reduction: True (default): `model.nll_bounds`, all step counts in one call per batch, the
            times (BFN) or steps (DDPM) of one repeat stratified across the examples: example i gets the uniform
            u_i = (pi(i) + v) / N, with pi a random permutation of 0..N-1 and v ~ U(0, 1), both fresh for every
            repeat. Each u_i is uniform, so every per-example estimate stays unbiased, while the N times of a
            repeat cover [0, 1) evenly: the test-set mean loses the part of its variance that comes from how the
            bound varies with t (most of it), and the R repeats stay independent, so the spread of their means is
            an honest Monte Carlo error. Plus the model's own variance reductions (see its `nll_bounds`), some
            fitted first on the first `pilot_size` examples (`model.nll_pilot`, e.g. a DDPM's proposal over
            steps); fixed before any evaluation draw, they keep the estimates unbiased.
            False: the plain one-sample `nll` per step count (the estimator before issue 17, for comparisons).
        redraw_data: draw the dataset's random parts (dynamic binarization) afresh for every repeat.
        pilot_size: examples given to `model.nll_pilot`.

    All step counts of one repeat share the data draw and the random numbers (t, flow samples): their estimates
    are positively correlated, so differences between step counts are far more precise than each estimate.

    Returns:
        {"n_examples", "dims", "repeats", "seed", "batch_size", "uniform", "wall_seconds", "results": {"10": {...},
        "inf": {...}}}, each result holding the bound's name, nats (+ _se), nats_per_dim, bits_per_dim (+ _se),
        the mean of each repeat (`nats_per_repeat`) and the Monte Carlo standard error of the mean over examples
        (`nats_mc_se`, the spread of the repeat means over sqrt(R); `nats_se` is the standard error over
        examples, which also holds the real spread between examples; `nats_se_floor` what of it the real spread
        alone makes, see `se_floor`).
    """
    step_list = parse_steps(steps if isinstance(steps, str | int) else list(steps))
    if repeats < 1:
        raise ConfigError(f"repeats must be at least 1, got {repeats}")
    if batch_size < 1:
        raise ConfigError(f"batch_size must be at least 1, got {batch_size}")
    if limit is not None and limit < 1:
        raise ConfigError(f"limit must be at least 1, got {limit}")
    if model.capabilities.likelihood == "none":
        raise ConfigError(f"a {model.family} model has no likelihood; evaluate its samples with --quality instead")
    if device is None:
        device = next(iter(model.parameters()), torch.empty(0)).device
    device = torch.device(device)
    was_training = model.training
    model.eval()
    t0 = time.perf_counter()
    x_fixed = None if redraw_data else materialize(data, limit=limit, seed=derive_seed(seed, "data", 0))
    pilot = None
    values: dict[Steps, list[Tensor]] = {s: [] for s in step_list}  # per step: R tensors [N]
    n_total = dims = 0
    bar = None
    try:
        for r in range(repeats):
            x_all = x_fixed if x_fixed is not None else materialize(data, limit=limit,
                                                                    seed=derive_seed(seed, "data", r))
            if x_all.shape[0] == 0:
                raise DataError("the evaluation set is empty")
            n_total, dims = x_all.shape[0], num_dims(x_all)
            if bar is None and progress:
                from tqdm import tqdm

                n_batches = math.ceil(n_total / batch_size)
                bar = tqdm(total=repeats * len(step_list) * n_batches, desc="nll", dynamic_ncols=True)
            if variance_reduction:  # all step counts in one call, times stratified across the examples
                if r == 0:  # what the estimator adapts, fitted before any evaluation draw
                    pilot_gen = torch.Generator(device=device).manual_seed(derive_seed(seed, "pilot"))
                    pilot = model.nll_pilot(x_all[:pilot_size].to(device), step_list, generator=pilot_gen)
                u = stratified_uniforms(n_total, torch.Generator().manual_seed(derive_seed(seed, "time", r)))
                gen = torch.Generator(device=device).manual_seed(derive_seed(seed, "nll", r))
                chunks: dict[Steps, list[Tensor]] = {s: [] for s in step_list}
                for start in range(0, n_total, batch_size):
                    xb = x_all[start:start + batch_size].to(device)
                    got = model.nll_bounds(xb, step_list, u=u[start:start + batch_size].to(device), generator=gen,
                                           strata=strata, pilot=pilot)
                    for s in step_list:
                        chunks[s].append(got[s].double().cpu())
                    if bar is not None:
                        bar.update(len(step_list))
                for s in step_list:
                    values[s].append(_check_finite(model, torch.cat(chunks[s]), s))
                continue
            for s in step_list:
                gen = torch.Generator(device=device).manual_seed(derive_seed(seed, "nll", r))
                chunks_s = []
                for start in range(0, n_total, batch_size):
                    xb = x_all[start:start + batch_size].to(device)
                    chunks_s.append(model.nll(xb, s, generator=gen).double().cpu())
                    if bar is not None:
                        bar.update(1)
                values[s].append(_check_finite(model, torch.cat(chunks_s), s))
    finally:
        if bar is not None:
            bar.close()
        model.train(was_training)
    results: dict[str, Any] = {}
    for s in step_list:
        stacked = torch.stack(values[s])  # [R, N]
        res: dict[str, Any] = {"steps": s, "bound": model.nll_name(s), "kind": model.capabilities.likelihood}
        res.update(summarize(stacked.mean(0), dims))
        res["nats_per_repeat"] = [float(v) for v in stacked.mean(1)]
        # Monte Carlo standard error of the test-set mean: the spread of the R repeat means over sqrt(R)
        res["nats_mc_se"] = float(stacked.mean(1).std(unbiased=True)) / math.sqrt(repeats) if repeats > 1 else None
        res["nats_se_floor"] = se_floor(stacked)
        if per_example:
            res["per_example"] = stacked.mean(0)
        results[str(s)] = res
    return {"n_examples": n_total, "dims": dims, "repeats": repeats, "seed": seed, "batch_size": batch_size,
            "uniform": uniform_reference(model, dims), "wall_seconds": time.perf_counter() - t0, "results": results}


# --- eval.json ------------------------------------------------------------------------------------------
def read_eval(run_dir: str | Path) -> dict[str, Any]:
    """RUN/eval.json as a dict ({} when absent; a corrupt file is a CheckpointError)."""
    from bfn.errors import CheckpointError

    path = Path(run_dir) / EVAL_NAME
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise CheckpointError(f"{path} is not valid JSON; delete it and rerun `bfn eval`") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} does not hold a JSON object; delete it and rerun `bfn eval`")
    return data


def write_eval(run_dir: str | Path, section: str, result: dict[str, Any]) -> Path:
    """Store `result` under `section` ("nll", "quality") of RUN/eval.json, keeping the other sections; atomic."""
    from bfn.utils.io import atomic_write_text

    path = Path(run_dir) / EVAL_NAME
    data = read_eval(run_dir)
    data[section] = result
    atomic_write_text(path, json.dumps(data, indent=2) + "\n")
    return path
