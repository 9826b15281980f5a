"""Training throughput, FLOPs, share of a measured convolution ceiling and peak memory of each preset's network.

    python -m benchmarks.training [--presets mnist-discrete,mixture-1d,...] [--repeats 5] [--threads 2]
    python -m benchmarks.training --device cuda --bf16 --presets all

For every preset (default: mnist-discrete, mnist-discretized, mnist-ddpm, mixture-1d, multidigit-discrete;
`all` adds the conditional and paper-sized presets) this builds the preset's model with random weights and one
batch of real data at the preset's batch size, and times the trainer's optimisation step (forward under
autocast, backward, grad clipping, AdamW, EMA update; no data loading): warm-up steps are excluded, and the
figure is the median of `--repeats` timed repeats of `--iters` steps each. It reports

- images/s = batch size / median seconds per step (and the spread of the repeats);
- FLOPs per image of the training forward pass and of forward + backward (FlopCounterMode: matmuls,
  convolutions, attention), and the achieved training GFLOP/s;
- the convolution ceiling measured in the same run: the GFLOP/s of torch's own 3x3 convolution, forward +
  backward, at the shape that carries most of the network's convolution FLOPs (its channels, resolution and
  batch), and the achieved fraction = training FLOP/s / that ceiling ("% of conv peak"; networks without 3x3
  convolutions, e.g. the MLP, are compared with the matmul peak and marked "mm"). The fp32 matmul peak (a
  2048 x 2048 torch.mm; also bf16 with --bf16) is still recorded, but it is not a ceiling for convolutions:
  on CPU it goes through MKL and reaches less than oneDNN's convolutions do;
- peak memory while training (CPU: peak RSS of the phase; CUDA: also max_memory_allocated);
- the dtype the network really ran in (with --bf16 it shows whether autocast reached the network).

Writes benchmarks/results/training.json and prints a Markdown table.
"""

from __future__ import annotations

import argparse
from typing import Any

import torch

from benchmarks import common

DEFAULT_PRESETS = ("mnist-discrete", "mnist-discretized", "mnist-ddpm", "mixture-1d", "multidigit-discrete")
QUICK_BATCH = 2


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.training", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    common.add_common_args(p)
    add_args(p)
    return p.parse_args(argv)


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--presets", default=",".join(DEFAULT_PRESETS),
                   help="comma-separated preset names, or 'all' (every preset shipped, including the GPU-sized "
                        "mnist-discrete-paper: for --device cuda)")
    p.add_argument("--warmup", type=int, default=2, help="untimed warm-up steps per preset")
    p.add_argument("--repeats", type=int, default=5, help="timed repeats per preset (the median is reported)")
    p.add_argument("--iters", type=int, default=0,
                   help="steps per timed repeat (0: enough for about 0.5 s per repeat, at least 1)")
    p.add_argument("--batch-size", type=int, default=0, help="override every preset's batch size (0: the preset's)")


def preset_list(spec: str) -> list[str]:
    from bfn.config import list_presets

    if spec == "all":
        return list_presets()
    names = [s.strip() for s in spec.split(",") if s.strip()]
    unknown = sorted(set(names) - set(list_presets()))
    if unknown:
        raise SystemExit(f"unknown preset(s) {', '.join(unknown)}; choose from {', '.join(list_presets())}")
    return names


def bench_preset(preset: str, device: torch.device, args: argparse.Namespace, peak: dict[str, Any]
                 ) -> dict[str, Any]:
    """One preset's row of training.json."""
    batch = args.batch_size or (QUICK_BATCH if args.quick else None)
    bench = common.build(preset, device, batch_size=batch, seed=args.seed)
    flops_fwd = common.count_flops(common.forward_only(bench, bf16=args.bf16))
    flops_train = common.count_flops(common.loss_backward(bench, bf16=args.bf16))
    conv = common.network_conv_peak(bench.model.network, common.forward_only(bench), device, backward=True,
                                    repeats=3 if args.quick else 7)
    step = common.train_step(bench, bf16=args.bf16)
    warmup, repeats, iters = (1, 2, 1) if args.quick else (max(args.warmup, 1), args.repeats, args.iters)
    with common.peak_memory(device) as memory:
        for _ in range(warmup):  # at least one: the optimizer state is allocated in the first step
            step()
        if iters <= 0:  # aim at about half a second per timed repeat
            once = common.time_call(step, device)
            iters = max(1, min(50, round(0.5 / max(once, 1e-6))))
        times = common.measure(step, device, warmup=0, repeats=repeats, iters=iters)
    sec = common.median(times)
    b = bench.batch_size
    ips = b / sec
    gflops = flops_train / b * ips / 1e9
    row: dict[str, Any] = {
        "preset": preset, "model": bench.cfg.model.type, "network": bench.cfg.model.network.name,
        "data": bench.cfg.data.name, "data_shape": list(bench.spec.shape), "parameters": bench.parameters,
        "batch_size": b, "preset_batch_size": bench.cfg.train.batch_size, "warmup_steps": warmup,
        "repeats": repeats, "iters_per_repeat": iters, "seconds_per_step": times,
        "seconds_per_step_median": sec, "spread": common.spread(times), "images_per_s": ips,
        "flops_forward_per_image": flops_fwd / b, "flops_train_per_image": flops_train / b,
        "achieved_gflops": gflops, "fraction_of_fp32_matmul_peak": gflops / peak["gflops_median"],
        "conv_peak": conv, "fraction_of_conv_peak": gflops / (conv or peak)["gflops_median"],
        "ceiling": "conv" if conv else "mm",
        "network_dtype": common.network_dtype(bench, bf16=args.bf16), "memory": memory,
    }
    if "bf16_peak" in peak:
        row["fraction_of_bf16_matmul_peak"] = gflops / peak["bf16_peak"]["gflops_median"]
    return row


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Measure every preset; returns what training.json holds."""
    device = common.setup_runtime(args)
    env = common.environment(device, bf16=args.bf16)
    n = 256 if args.quick else 2048
    peak = common.matmul_peak(device, n=n, repeats=3 if args.quick else 7)
    if args.bf16:
        peak["bf16_peak"] = common.matmul_peak(device, n=n, repeats=3 if args.quick else 7, dtype=torch.bfloat16)
    rows = []
    for preset in preset_list(args.presets):
        row = bench_preset(preset, device, args, peak)
        rows.append(row)
        print(f"train {preset:24s} batch {row['batch_size']:4d}  {row['images_per_s']:10.1f} img/s  "
              f"{row['achieved_gflops']:7.1f} GFLOP/s ({100 * row['fraction_of_conv_peak']:.0f}% of "
              f"{row['ceiling']} peak)"
              f"  peak RSS {row['memory']['peak_rss_mib']:.0f} MiB", flush=True)
    return {"benchmark": "training", "quick": args.quick, "environment": env, "matmul_peak": peak,
            "presets": rows}


def markdown(result: dict[str, Any]) -> str:
    peak = result["matmul_peak"]
    cuda = result["environment"]["device"].startswith("cuda")
    headers = ["preset", "params", "batch", "img/s", "ms/step", "spread", "fwd MFLOP/img", "train MFLOP/img",
               "GFLOP/s", "% of conv peak", "peak RSS MiB"] + (["CUDA peak MiB"] if cuda else [])
    rows = []
    for r in result["presets"]:
        row = [r["preset"], f"{r['parameters'] / 1e6:.2f}M", r["batch_size"], common.fmt(r["images_per_s"]),
               common.fmt(1e3 * r["seconds_per_step_median"]), f"{100 * r['spread']:.0f}%",
               common.fmt(r["flops_forward_per_image"] / 1e6), common.fmt(r["flops_train_per_image"] / 1e6),
               common.fmt(r["achieved_gflops"]),
               f"{100 * r['fraction_of_conv_peak']:.0f}%" + ("" if r["ceiling"] == "conv" else " (mm)"),
               common.fmt(r["memory"]["peak_rss_mib"], 0)]
        if cuda:
            row.append(common.fmt(r["memory"].get("cuda_max_allocated_mib"), 0))
        rows.append(row)
    net_dtypes = sorted({r["network_dtype"] for r in result["presets"]})
    lines = [f"### Training throughput ({common.env_line(result['environment'])})", "",
             common.table(headers, rows), "",
             "Conv peak: torch's 3x3 convolution, forward + backward, at the shape carrying most of the network's "
             "convolution FLOPs: " + "; ".join(
                 f"{r['preset']} {c['c_in']}->{c['c_out']} ch at {c['height']}x{c['width']}, batch {c['batch']}: "
                 f"{c['gflops_median']:.1f} GFLOP/s" for r in result["presets"] if (c := r.get("conv_peak"))) + ".",
             f"fp32 matmul peak ({peak['n']}x{peak['n']} torch.mm, {peak['threads']} thread(s)), for reference and "
             f"for networks without convolutions: {peak['gflops_median']:.1f} GFLOP/s median, "
             f"{peak['gflops_best']:.1f} best."]
    if "bf16_peak" in peak:
        lines.append(f"bf16 matmul peak: {peak['bf16_peak']['gflops_median']:.1f} GFLOP/s median.")
    lines.append(f"Network output dtype in training: {', '.join(net_dtypes)}. One step = forward, backward, grad "
                 "clipping, AdamW, EMA (no data loading); median of the timed repeats after warm-up.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    result = run(args)
    path = common.write_json(args.out, "training", result)
    print(markdown(result))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
