"""Time to evaluate the likelihood bound on the embedded MNIST test split (1,000 images).

    python -m benchmarks.nll [--nll-steps inf] [--nll-repeats 2] [--nll-batch 256] [--threads 2]
    python -m benchmarks.nll --device cuda --bf16

Builds the mnist-discrete preset's BFN with random weights and times `bfn.evaluation.nll.evaluate_nll` on the
test split of its dataset (the 1,000 held-out digits of the embedded MNIST subset, freshly binarized), as
`bfn eval RUN --nll` runs it: one Monte Carlo repeat, for each step count (default "inf", the continuous-time
bound L^inf + L^r; the reconstruction term L^r costs one network evaluation per image, shared by all bounds, and
each bound one more). One untimed warm-up on a single batch,
then the median of `--nll-repeats` full evaluations. Reports seconds, images/s, FLOPs per image and peak
memory.

Writes benchmarks/results/nll.json and prints a Markdown table.
"""

from __future__ import annotations

import argparse
from typing import Any

import torch

from benchmarks import common

PRESET = "mnist-discrete"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.nll", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    common.add_common_args(p)
    add_args(p)
    return p.parse_args(argv)


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--nll-steps", default="inf", help="step counts of the bound (e.g. inf or 10,inf)")
    p.add_argument("--nll-repeats", type=int, default=2, help="timed full evaluations (the median is reported)")
    p.add_argument("--nll-batch", type=int, default=256, help="images per forward pass")


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Time evaluate_nll on the test split; returns what nll.json holds."""
    from bfn.data import load_dataset
    from bfn.evaluation.nll import evaluate_nll, parse_steps

    device = common.setup_runtime(args)
    env = common.environment(device, bf16=args.bf16)
    steps = parse_steps(args.nll_steps)
    bench = common.build(PRESET, device, batch_size=2, seed=args.seed)
    model = bench.model.eval()
    cfg = bench.cfg
    test, _ = load_dataset(cfg.data.name, "test", root=cfg.data.root, **cfg.data.options)
    limit = 32 if args.quick else None
    batch = 16 if args.quick else args.nll_batch
    n_images = min(len(test), limit or len(test))

    def evaluate(lim: int | None) -> dict[str, Any]:
        with common.autocast(device, args.bf16):
            return evaluate_nll(model, test, steps=steps, repeats=1, batch_size=batch, seed=args.seed,
                                device=device, limit=lim)

    with torch.no_grad():
        flops = {str(s): common.count_flops(lambda s=s: model.nll(bench.x, s)) / bench.batch_size for s in steps}
    evaluate(batch)  # warm-up on one batch
    results: list[dict[str, Any]] = []
    repeats = 1 if args.quick else max(1, args.nll_repeats)
    with common.peak_memory(device) as memory:
        times = common.measure(lambda: results.append(evaluate(limit)), device, warmup=0, repeats=repeats)
    sec = common.median(times)
    last = results[-1]
    bounds = {k: {"nats": v["nats"], "bits_per_dim": v["bits_per_dim"]} for k, v in last["results"].items()}
    return {"benchmark": "nll", "quick": args.quick, "environment": env, "preset": PRESET,
            "dataset": f"{cfg.data.name} test split", "n_images": n_images, "steps": [str(s) for s in steps],
            "batch_size": batch, "repeats_per_evaluation": 1, "timed_evaluations": repeats, "seconds": times,
            "seconds_median": sec, "spread": common.spread(times), "images_per_s": n_images / sec,
            "network_evaluations_per_image": 1 + len(steps), "flops_per_image": flops, "memory": memory,
            "weights": "random (seeded)", "bounds_random_weights": bounds}


def markdown(result: dict[str, Any]) -> str:
    cuda = result["environment"]["device"].startswith("cuda")
    headers = ["bound steps", "images", "batch", "seconds", "img/s", "spread", "MFLOP/img", "peak RSS MiB"] + (
        ["CUDA peak MiB"] if cuda else [])
    mflop = sum(result["flops_per_image"].values()) / 1e6
    row = [",".join(result["steps"]), result["n_images"], result["batch_size"], common.fmt(result["seconds_median"], 2),
           common.fmt(result["images_per_s"]), f"{100 * result['spread']:.0f}%", common.fmt(mflop),
           common.fmt(result["memory"]["peak_rss_mib"], 0)]
    if cuda:
        row.append(common.fmt(result["memory"].get("cuda_max_allocated_mib"), 0))
    return "\n".join([f"### NLL evaluation, {result['preset']} on {result['dataset']} "
                      f"({common.env_line(result['environment'])})", "",
                      common.table(headers, [row]), "",
                      "`evaluate_nll` with one Monte Carlo repeat; each bound is L + L^r: one network evaluation "
                      "per image for L^r, shared, and one per bound."])


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    result = run(args)
    path = common.write_json(args.out, "nll", result)
    print(markdown(result))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
