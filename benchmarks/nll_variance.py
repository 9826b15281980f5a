"""Errors and time of the NLL bounds on a trained run: the one-sample estimator against the variance-reduced one.

    python -m benchmarks.nll_variance RUN [--steps 10,100,784,inf] [--repeats 3] [--rounds 1] [--limit N]

Evaluates `bfn.evaluation.nll.evaluate_nll` on the run's test split three times per round, interleaved:
- "one-sample, redrawn": `variance_reduction=False, redraw_data=True`, the estimator before issue 17 (one sampled t
  and y per example and bound, L^r drawn afresh for every bound, the test set binarized afresh in every repeat);
- "one-sample": the same on one fixed binarization of the test set (what the data draw alone contributed);
- "variance-reduced": the default (one fixed test set, L^r shared, the times of each repeat stratified across the
  examples, stratified sender draws for the BFN's n-step KL, importance-sampled steps for a DDPM).
For each bound it reports the two errors:

- "s.e. over examples": the standard deviation of the per-example R-averages over sqrt(N) (Monte Carlo noise plus
  the real spread of the examples);
- "its floor": what the real spread of the examples alone leaves of it (infinitely many repeats; `se_floor`);
- "MC s.e.": the Monte Carlo standard error of the test-set mean, the spread of the R repeat means over sqrt(R),

and the wall time of each evaluation (median over rounds). Writes benchmarks/results/nll_variance_<run>.json and
prints a Markdown table.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks import common


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.nll_variance", description=__doc__.split("\n\n")[0])
    p.add_argument("run", help="run directory written by `bfn train`")
    p.add_argument("--steps", default="10,100,784,inf")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--rounds", type=int, default=1, help="interleaved before/after pairs (median time)")
    p.add_argument("--limit", type=int, default=None, help="first N test examples (default: all)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(common.RESULTS))
    return p.parse_args(argv)


def run(args: argparse.Namespace) -> dict[str, Any]:
    from bfn.evaluation.nll import evaluate_nll
    from bfn.evaluation.runs import load_run, test_split

    torch.set_num_threads(args.threads)
    run_ = load_run(args.run)
    model = run_.model.eval()
    test = test_split(run_)
    out: dict[str, Any] = {"run": args.run, "steps": args.steps, "repeats": args.repeats, "limit": args.limit,
                           "threads": args.threads, "rounds": []}
    for _ in range(args.rounds):
        row = {}
        for name, reduce, redraw in (("one-sample, redrawn", False, True), ("one-sample", False, False),
                                     ("variance-reduced", True, False)):
            t0 = time.perf_counter()
            res = evaluate_nll(model, test, steps=args.steps, repeats=args.repeats, seed=args.seed,
                               limit=args.limit, variance_reduction=reduce, redraw_data=redraw)
            row[name] = {"seconds": time.perf_counter() - t0,
                         "bounds": {k: {"nats": v["nats"], "se_examples": v["nats_se"], "mc_se": v["nats_mc_se"],
                                        "se_floor": v["nats_se_floor"]}
                                    for k, v in res["results"].items()}}
        out["rounds"].append(row)
    return out


def markdown(result: dict[str, Any]) -> str:
    lines = ["| bound | estimator | nats | s.e. over examples | its floor | MC s.e. | seconds |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    last = result["rounds"][-1]
    for name, res in last.items():
        secs = sorted(r[name]["seconds"] for r in result["rounds"])[len(result["rounds"]) // 2]
        for k, v in res["bounds"].items():
            mc = "-" if v["mc_se"] is None else f"{v['mc_se']:.2f}"
            floor = "-" if v.get("se_floor") is None else f"{v['se_floor']:.2f}"
            lines.append(f"| {k} | {name} | {v['nats']:.2f} | {v['se_examples']:.2f} | {floor} | {mc} | {secs:.1f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    result = run(args)
    path = common.write_json(args.out, f"nll_variance_{Path(args.run).name}", result)
    print(markdown(result))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
