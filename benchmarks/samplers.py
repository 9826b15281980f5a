"""Sample quality against network evaluations for every BFN sampler, on trained MNIST runs.

    python -m benchmarks.samplers RUN_DISCRETE RUN_DISCRETIZED [--n 500] [--nfe 5,10,20,50,100,1000]

For each run (a `bfn train` directory, e.g. runs/mnist-discrete and runs/mnist-discretized), each sampler (the
paper's, output-mean, and the BFN-Solvers ode1/ode2/sde1/sde2) and each budget of network evaluations (NFE), draws
`--n` samples and scores them with `bfn.evaluation.quality.sample_quality` (Frechet distance in the features of
bfn's MNIST classifier, KID, precision/recall) against the run's test split. Every sampler spends NFE - 1 steps
plus one final evaluation of p_O at t = 1, so equal NFE means equal network cost. A "data" row scores `--n`
training images the same way: the floor that sampling noise and the finite reference leave.

Cost: n x NFE network evaluations per cell; on CPU the 1,000-NFE column dominates, so it can be run on its own
(cells accumulate in the JSON and the table shows them all):

    python -m benchmarks.samplers RUN_D RUN_Z --nfe 5,10,20,50,100
    python -m benchmarks.samplers RUN_D RUN_Z --nfe 1000 --samplers paper,output-mean

Writes benchmarks/results/samplers.json (after every cell; an interrupted run resumes where it stopped unless
--fresh) and samplers.png (FID against NFE), and prints one Markdown table per run.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any

import torch

from bfn.utils.io import atomic_write_text

SAMPLER_NAMES = ("paper", "output-mean", "ode1", "ode2", "sde1", "sde2")
RESULTS = Path(__file__).resolve().parent / "results"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.samplers", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("runs", nargs="+", help="run directories (e.g. runs/mnist-discrete runs/mnist-discretized)")
    p.add_argument("--n", type=int, default=500, help="samples per cell")
    p.add_argument("--nfe", default="5,10,20,50,100,1000", help="network-evaluation budgets, comma separated")
    p.add_argument("--samplers", default=",".join(SAMPLER_NAMES), help="sampler names, comma separated")
    p.add_argument("--batch-size", type=int, default=500, help="samples per model.sample call")
    p.add_argument("--seed", type=int, default=0, help="seed of the samplers and of the metrics")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads on CPU")
    p.add_argument("--out", default=str(RESULTS), help="folder for samplers.json and samplers.png")
    p.add_argument("--fresh", action="store_true",
                   help="recompute the cells asked for even when samplers.json holds them (other cells are kept)")
    return p.parse_args(argv)


def draw(run: Any, sampler: str, steps: int, *, n: int, batch_size: int, seed: int,
         final: str = "sample") -> tuple[torch.Tensor, float]:
    """n samples of `run` as [0, 1] images, and the seconds it took (`final`: what the last step returns, a draw
    from the output distribution, its mode or its mean)."""
    from bfn.evaluation.compare import display_samples

    gen = torch.Generator(device=next(run.model.parameters()).device).manual_seed(seed)
    t0 = time.perf_counter()
    chunks = [run.model.sample(min(batch_size, n - i), steps, sampler=sampler, generator=gen, final=final)
              for i in range(0, n, batch_size)]
    return display_samples(run, torch.cat(chunks)), time.perf_counter() - t0


def training_images(run: Any, n: int, seed: int) -> torch.Tensor:
    """n training images of the run's dataset as [0, 1] images (the "data" row)."""
    from bfn.data import load_dataset
    from bfn.evaluation.compare import display_samples
    from bfn.evaluation.nll import materialize

    data = load_dataset(run.cfg.data.name, "train", root=run.cfg.data.root, **run.cfg.data.options)[0]
    return display_samples(run, materialize(data, limit=n, seed=seed))


def summary(quality: dict[str, Any]) -> dict[str, Any]:
    keys = ("fid", "kid", "kid_std", "precision", "recall", "density", "coverage", "confidence", "label_entropy")
    return {k: quality[k] for k in keys if k in quality}


def benchmark_run(path: str, args: argparse.Namespace, results: dict[str, Any], save: Any) -> None:
    """Fill results[run name] cell by cell: {"data": {...}, sampler: {nfe: {...}}}."""
    from bfn.evaluation.classifier import load_classifier
    from bfn.evaluation.compare import reference_images
    from bfn.evaluation.quality import sample_quality
    from bfn.evaluation.runs import load_run

    run = load_run(path, device=args.device)
    entry = results.setdefault(run.name, {})
    entry["path"], entry["kind"] = str(path), run.model.data.kind
    classifier = load_classifier(device=args.device)
    reference = reference_images(run, limit=None, seed=args.seed)
    if args.fresh or "data" not in entry:
        entry["data"] = summary(sample_quality(training_images(run, args.n, args.seed), reference,
                                               classifier=classifier, seed=args.seed, device=args.device))
        save()
    for name in args.samplers:
        for nfe in args.nfe:
            cell = entry.setdefault(name, {})
            if not args.fresh and cell.get(str(nfe), {}).get("n") == args.n:
                continue
            samples, seconds = draw(run, name, nfe - 1, n=args.n, batch_size=args.batch_size, seed=args.seed)
            q = sample_quality(samples, reference, classifier=classifier, seed=args.seed, device=args.device)
            cell[str(nfe)] = {"n": args.n, "steps": nfe - 1, "seconds": seconds, **summary(q)}
            print(f"{run.name:24s} {name:12s} NFE {nfe:5d}  FID {q['fid']:8.3f}  ({seconds:.0f} s)", flush=True)
            save()


def cells(results: dict[str, Any]) -> tuple[list[str], list[int]]:
    """Every sampler (in SAMPLER_NAMES order, others after) and NFE held in `results`, so that separate
    invocations (e.g. --nfe 1000 --samplers paper for the reference alone) end up in one table."""
    names = {k for entry in results.values() for k, v in entry.items() if isinstance(v, dict) and k != "data"}
    nfes = {int(n) for entry in results.values() for k in names for n in entry.get(k, {})}
    return [n for n in SAMPLER_NAMES if n in names] + sorted(names - set(SAMPLER_NAMES)), sorted(nfes)


def markdown(results: dict[str, Any], samplers: list[str], nfes: list[int]) -> str:
    """One table per run: FID (lower is better) per sampler and NFE."""
    lines = []
    for run, entry in results.items():
        lines += [f"### {run} ({entry.get('kind', '?')}): FID in classifier features against NFE", "",
                  "| sampler | " + " | ".join(str(n) for n in nfes) + " |",
                  "| --- |" + " ---: |" * len(nfes)]
        for name in samplers:
            cells = [entry.get(name, {}).get(str(n), {}).get("fid") for n in nfes]
            lines.append(f"| {name} | " + " | ".join("" if c is None else f"{c:.2f}" for c in cells) + " |")
        if "data" in entry:
            lines.append(f"| data (training images) | {entry['data']['fid']:.2f} |" + " |" * (len(nfes) - 1))
        lines.append("")
    return "\n".join(lines)


def plot(results: dict[str, Any], samplers: list[str], nfes: list[int], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, axes = plt.subplots(1, len(results), figsize=(5.5 * len(results), 4), squeeze=False)
    for ax, (run, entry) in zip(axes[0], results.items(), strict=True):
        for name in samplers:
            pts = [(n, entry.get(name, {}).get(str(n), {}).get("fid")) for n in nfes]
            pts = [(n, f) for n, f in pts if f is not None and math.isfinite(f)]
            if pts:
                ax.plot(*zip(*pts, strict=True), marker="o", label=name, ls="--" if name in ("paper", "output-mean")
                        else "-")
        if "data" in entry:
            ax.axhline(entry["data"]["fid"], color="grey", lw=1, ls=":", label="data")
        ax.set(xscale="log", yscale="log", xlabel="network evaluations (NFE)", ylabel="FID (classifier features)",
               title=f"{run} ({entry.get('kind', '?')})")
        ax.set_xticks(nfes, [str(n) for n in nfes], minor=False)
        ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.nfe = [int(v) for v in args.nfe.split(",")]
    args.samplers = [s.strip() for s in args.samplers.split(",") if s.strip()]
    if min(args.nfe) < 2:
        raise SystemExit("every NFE must be at least 2 (one step plus the final output evaluation)")
    from bfn.samplers import get_sampler

    for name in args.samplers:
        get_sampler(name)  # fail early on a typo
    if args.device == "cpu":
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    json_path = out / "samplers.json"
    # --fresh recomputes the cells asked for; every other cell already in the file is kept
    results: dict[str, Any] = json.loads(json_path.read_text()) if json_path.is_file() else {}

    def save() -> None:
        """Write this invocation's runs into the JSON, keeping the other runs' entries as they are on disk now
        (two invocations on different runs may share the file)."""
        on_disk = json.loads(json_path.read_text()) if json_path.is_file() else {}
        mine = {Path(p).name for p in args.runs}
        merged = {**on_disk, **{k: v for k, v in results.items() if k in mine or k not in on_disk}}
        atomic_write_text(json_path, json.dumps(merged, indent=1))
        results.update({k: v for k, v in merged.items() if k not in mine})

    for path in args.runs:
        benchmark_run(path, args, results, save)
    shown = {run: results[run] for run in results if any(Path(p).name == run for p in args.runs)} or results
    samplers, nfes = cells(shown)
    print(markdown(shown, samplers, nfes))
    plot(shown, samplers, nfes, out / "samplers.png")
    print(f"wrote {json_path} and {out / 'samplers.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
