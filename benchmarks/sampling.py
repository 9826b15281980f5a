"""Sampling throughput of the mnist-discrete network: images/s at 10, 100 and 1000 steps.

    python -m benchmarks.sampling [--samplers paper,sde2] [--sample-steps 10,100,1000] [--threads 2]
    python -m benchmarks.sampling --sample-batch 64      # bfn sample's default n (minutes on CPU)
    python -m benchmarks.sampling --device cuda --bf16

Builds the mnist-discrete preset's BFN with random weights (its zero-initialised output layer gets small random
values so that the output depends on the input) and times `model.sample(batch, steps, sampler=...)` as
`bfn sample` calls it (under the model's own no_grad) for each sampler and step count, at `--sample-batch`
images per call (default 64 on CUDA; 16 on CPU, to keep the suite to minutes; the network's own images/s at batch
64 is recorded beside that at the sampling batch, to show what the batch costs): one untimed warm-up call per
sampler, then the median of up to `--sample-repeats` timed calls (fewer for long cells, at most
`--max-evals` network evaluations per cell, never fewer than one call). A sample of n steps evaluates the network
n + 1 times (n steps plus the final output distribution). It reports images/s, milliseconds per network
evaluation, the network's share of the time (evaluations x the network's own forward time, measured apart, over
the cell's time: the rest is the sampler's and the flow's own work; above 100% means load changed between the
two measurements), achieved
GFLOP/s against a convolution ceiling measured in the same run (torch's own 3x3 convolution, forward only, at
the shape carrying most of the network's convolution FLOPs at the sampling batch; the fp32 matmul peak is kept
in the JSON for reference), and peak memory per cell.

Writes benchmarks/results/sampling.json and prints a Markdown table.
"""

from __future__ import annotations

import argparse
from typing import Any

import torch

from benchmarks import common

PRESET = "mnist-discrete"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.sampling", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    common.add_common_args(p)
    add_args(p)
    return p.parse_args(argv)


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--samplers", default="paper,sde2", help="sampler names, comma separated")
    p.add_argument("--sample-steps", default="10,100,1000", help="step counts, comma separated")
    p.add_argument("--sample-batch", type=int, default=0,
                   help="images per model.sample call (0: 64 on CUDA, 16 on CPU, where 2 x 1001-step samples of 64 "
                        "would take minutes)")
    p.add_argument("--sample-repeats", dest="sample_repeats", type=int, default=3,
                   help="timed calls per cell at most (median reported)")
    p.add_argument("--max-evals", type=int, default=200,
                   help="network evaluations per cell at most, beyond the first timed call")


def timed_calls(steps: int, repeats: int, max_evals: int) -> int:
    """How many timed calls a cell of `steps` steps gets: `repeats`, fewer when that would exceed `max_evals`
    network evaluations, and at least one."""
    return max(1, min(repeats, max_evals // (steps + 1)))


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Measure every (sampler, steps) cell; returns what sampling.json holds."""
    from bfn.samplers import get_sampler

    device = common.setup_runtime(args)
    env = common.environment(device, bf16=args.bf16)
    samplers = [s.strip() for s in args.samplers.split(",") if s.strip()]
    for name in samplers:
        get_sampler(name)  # fail early on a typo
    steps_list = [2, 5] if args.quick else [int(s) for s in args.sample_steps.split(",")]
    batch = 4 if args.quick else (args.sample_batch or (64 if device.type == "cuda" else 16))
    peak = common.matmul_peak(device, n=256 if args.quick else 2048, repeats=3 if args.quick else 7)
    bench = common.build(PRESET, device, batch_size=batch, seed=args.seed)
    model = bench.model.eval()

    def sample(name: str, steps: int) -> Any:
        gen = torch.Generator(device=device).manual_seed(args.seed)
        with common.autocast(device, args.bf16):
            return model.sample(batch, steps, sampler=name, generator=gen)

    flops_per_eval = common.count_flops(lambda: sample(samplers[0], 1)) / 2  # 1 step + the final evaluation
    # the network alone: what a step would cost without the sampler's own work, at the sampling batch and at
    # batch 64 (`bfn sample`'s default n) for reference
    gen = torch.Generator().manual_seed(args.seed)
    by_batch: dict[str, Any] = {}
    for b in sorted({batch, 4 if args.quick else 64}):
        net_x = (torch.rand(b, *bench.spec.shape, generator=gen) * 2 - 1).to(device)
        t = torch.rand(b, generator=gen).to(device)

        def net_forward(net_x: torch.Tensor = net_x, t: torch.Tensor = t) -> None:
            with torch.no_grad(), common.autocast(device, args.bf16):
                model.network(net_x, t)

        times = common.measure(net_forward, device, warmup=2, repeats=3 if args.quick else 10)
        by_batch[str(b)] = {"seconds": times, "seconds_median": common.median(times),
                            "images_per_s": b / common.median(times)}
    net_x = (torch.rand(batch, *bench.spec.shape, generator=gen) * 2 - 1).to(device)
    t = torch.rand(batch, generator=gen).to(device)
    conv = common.network_conv_peak(model.network, lambda: model.network(net_x, t), device, backward=False,
                                    repeats=3 if args.quick else 7)
    ceiling = conv or peak
    net_times = by_batch[str(batch)]["seconds"]
    net_sec = common.median(net_times)
    cells = []
    for name in samplers:
        sample(name, 2)  # warm-up
        for steps in steps_list:
            calls = timed_calls(steps, 2 if args.quick else args.sample_repeats, args.max_evals)
            with common.peak_memory(device) as memory:
                times = common.measure(lambda name=name, steps=steps: sample(name, steps), device, warmup=0,
                                       repeats=calls)
            sec = common.median(times)
            evals = steps + 1
            gflops = flops_per_eval * evals / sec / 1e9
            cell = {"sampler": name, "steps": steps, "network_evaluations": evals, "batch_size": batch,
                    "timed_calls": calls, "seconds": times, "seconds_median": sec, "spread": common.spread(times),
                    "images_per_s": batch / sec, "ms_per_evaluation": 1e3 * sec / evals,
                    "network_share": evals * net_sec / sec, "achieved_gflops": gflops,
                    "fraction_of_fp32_matmul_peak": gflops / peak["gflops_median"],
                    "fraction_of_conv_peak": gflops / ceiling["gflops_median"], "memory": memory}
            cells.append(cell)
            print(f"sample {name:8s} {steps:5d} steps  batch {batch:4d}  {cell['images_per_s']:9.2f} img/s  "
                  f"{cell['ms_per_evaluation']:7.1f} ms/eval  network {100 * cell['network_share']:.0f}%  "
                  f"peak RSS {memory['peak_rss_mib']:.0f} MiB", flush=True)
    return {"benchmark": "sampling", "quick": args.quick, "environment": env, "preset": PRESET,
            "parameters": bench.parameters, "batch_size": batch, "weights": "random (seeded)",
            "flops_per_image_per_evaluation": flops_per_eval / batch,
            "network_forward_seconds": net_times, "network_forward_seconds_median": net_sec,
            "network_forward_by_batch": by_batch,
            "matmul_peak": peak, "conv_peak": conv, "ceiling": "conv" if conv else "mm", "cells": cells}


def markdown(result: dict[str, Any]) -> str:
    cuda = result["environment"]["device"].startswith("cuda")
    headers = ["sampler", "steps", "batch", "img/s", "ms/eval", "network share", "GFLOP/s", "% of conv peak",
               "peak RSS MiB"] + (["CUDA peak MiB"] if cuda else [])
    rows = []
    for c in result["cells"]:
        row = [c["sampler"], c["steps"], c["batch_size"], common.fmt(c["images_per_s"], 2),
               common.fmt(c["ms_per_evaluation"]), f"{100 * c['network_share']:.0f}%", common.fmt(c["achieved_gflops"]),
               f"{100 * c.get('fraction_of_conv_peak', c['fraction_of_fp32_matmul_peak']):.0f}%",
               common.fmt(c["memory"]["peak_rss_mib"], 0)]
        if cuda:
            row.append(common.fmt(c["memory"].get("cuda_max_allocated_mib"), 0))
        rows.append(row)
    mflop = result["flops_per_image_per_evaluation"] / 1e6
    conv = result.get("conv_peak")
    ceiling = (f"Conv peak: torch's 3x3 convolution, forward, {conv['c_in']}->{conv['c_out']} channels at "
               f"{conv['height']}x{conv['width']}, batch {conv['batch']}: {conv['gflops_median']:.1f} GFLOP/s. "
               if conv else "No 3x3 convolutions: % of the fp32 matmul peak. ")
    ref = ", ".join(f"{v['images_per_s']:.0f} img/s at batch {b}"
                    for b, v in result["network_forward_by_batch"].items())
    return "\n".join([
        f"### Sampling throughput, {result['preset']} network ({common.env_line(result['environment'])})", "",
        common.table(headers, rows, "lrrrrrrrr" + ("r" if cuda else "")), "",
        ceiling + f"{mflop:.1f} MFLOP per image per network evaluation; a sample of n steps takes n + 1 evaluations. "
        f"Network forward alone at batch {result['batch_size']}: "
        f"{1e3 * result['network_forward_seconds_median']:.1f} ms (network forwards alone: {ref}). Random weights; "
        "the cost does not depend on them."])


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    result = run(args)
    path = common.write_json(args.out, "sampling", result)
    print(markdown(result))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

