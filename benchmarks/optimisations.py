"""Side-by-side experiments to find speed-ups, each measured A/B in one process with interleaved repeats.

    python -m benchmarks.optimisations                          # all experiments (about 10 minutes on 2 cores)
    python -m benchmarks.optimisations --only threads,batch_size --threads-list 1,2
    python -m benchmarks.optimisations --no-compile             # skip torch.compile (slow to compile on CPU)
    python -m benchmarks.optimisations --quick                  # smoke run (seconds; numbers mean nothing)

Every experiment uses the mnist-discrete preset (random weights, a batch of real binarized digits) and times
variants round-robin: each round runs every variant once in a rotated order, so that background load and clock
changes hit all variants alike; a variant's figure is the median over rounds, and `speedup` is the median over
rounds of (baseline seconds / variant seconds) of the same round, with `wins` the share of rounds in which the
variant was faster. The experiments:

- channels_last: the U-Net's weights and input in channels_last memory format vs the default (training step and
  no-grad network forward), with the largest output difference (numerics);
- compile: `network.compile()` (as train.compile does) vs eager for the training step and for the no-grad
  forward; compile time is reported separately (first call minus an eager call), by default into an empty
  Inductor cache (`--compile-cache warm` shows the cost once the cache holds the graphs); a failure is recorded
  as its error line;
- inference_mode: `model.sample` under torch.inference_mode() vs as is (its own no_grad);
- threads: training step and no-grad forward at each thread count of --threads-list;
- batch_size: training images/s and fraction of the fp32 matmul peak (measured in this run) at batch 64/128/256;
- optimizer: AdamW as the trainer builds it (the for-loop implementation on CPU) vs foreach=True vs fused=True,
  for the whole training step and for optimizer.step() alone;
- overhead: the whole training step vs the network's forward + backward alone (the rest is the flow's math,
  the optimizer, clipping and EMA);
- bf16_network: the network's forward + backward under torch.autocast(bfloat16) vs float32 (what mixed precision
  could gain if it reached the network).

Writes benchmarks/results/optimisations.json and prints a Markdown report.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import os
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import Tensor

from benchmarks import common

PRESET = "mnist-discrete"
EXPERIMENTS = ("channels_last", "compile", "inference_mode", "threads", "batch_size", "optimizer", "overhead",
               "bf16_network")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.optimisations", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    common.add_common_args(p)
    p.add_argument("--only", default=",".join(EXPERIMENTS), help="experiments to run, comma separated")
    p.add_argument("--rounds", type=int, default=7, help="interleaved timed rounds per experiment")
    p.add_argument("--warmup", type=int, default=2, help="untimed calls per variant before the rounds")
    p.add_argument("--batch-sizes", default="64,128,256", help="training batch sizes of the batch_size experiment")
    p.add_argument("--threads-list", default="", help="thread counts of the threads experiment (default: 1, 2 and "
                   "the number of usable cores)")
    p.add_argument("--sample-steps", type=int, default=10, help="steps of the inference_mode experiment's samples")
    p.add_argument("--no-compile", action="store_true", help="skip the torch.compile experiment")
    p.add_argument("--compile-cache", choices=("fresh", "warm"), default="fresh",
                   help="fresh: compile into an empty temporary Inductor cache (the first-time cost a user pays); "
                        "warm: use the default cache, which earlier runs may have filled")
    return p.parse_args(argv)


# --- statistics -------------------------------------------------------------------------------------------------
def compare(times: dict[str, list[float]], baseline: str, *, items: int = 1) -> dict[str, Any]:
    """Per variant: the seconds of every round, their median, items/s, and against `baseline` the median paired
    speedup (baseline seconds / variant seconds, round by round) and the share of rounds it won."""
    base = times[baseline]
    out: dict[str, Any] = {}
    for name, ts in times.items():
        ratios = [b / t for b, t in zip(base, ts, strict=True)]
        out[name] = {"seconds": ts, "seconds_median": common.median(ts), "spread": common.spread(ts),
                     "items_per_s": items / common.median(ts), "speedup": common.median(ratios),
                     "wins": sum(r > 1 for r in ratios) / len(ratios)}
    return out


def verdict(variants: dict[str, Any], baseline: str) -> str:
    """A one-line reading: which variant is clearly faster (>= 10 % median speedup and winning >= 80 % of at least
    5 rounds), or that none is."""
    best = max((v for v in variants if v != baseline), key=lambda v: variants[v]["speedup"], default=None)
    if best is None:
        return "nothing to compare"
    if len(variants[best]["seconds"]) < 5:
        return f"too few rounds for a verdict (best alternative {best}: x{variants[best]['speedup']:.2f})"
    s, w = variants[best]["speedup"], variants[best]["wins"]
    if s >= 1.10 and w >= 0.8:
        return f"{best} is clearly faster than {baseline}: x{s:.2f}, won {100 * w:.0f}% of rounds"
    if s <= 1 / 1.10:
        return f"{baseline} is clearly faster (best alternative {best}: x{s:.2f})"
    return f"no clear difference (best alternative {best}: x{s:.2f}, won {100 * w:.0f}% of rounds)"


# --- helpers ----------------------------------------------------------------------------------------------------
def network_inputs(bench: common.Bench, seed: int = 0) -> tuple[Tensor, Tensor]:
    """A fixed batch of what the network sees (values in [-1, 1] of the data's shape) and times t."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(bench.batch_size, *bench.spec.shape, generator=gen) * 2 - 1
    t = torch.rand(bench.batch_size, generator=gen)
    return x.to(bench.x.device), t.to(bench.x.device)


def network_forward(bench: common.Bench) -> Callable[[], Tensor]:
    """The U-Net alone, no grad, on a fixed batch of network inputs."""
    x, t = network_inputs(bench)
    net = bench.model.network

    def fn() -> Tensor:
        with torch.no_grad():
            return net(x, t)

    return fn


def network_train(bench: common.Bench, *, bf16: bool = False) -> Callable[[], None]:
    """The U-Net alone, forward + backward of the mean squared output."""
    x, t = network_inputs(bench)
    net = bench.model.network

    def fn() -> None:
        with common.autocast(x.device, bf16):
            out = net(x, t)
        out.float().square().mean().backward()
        net.zero_grad(set_to_none=True)

    return fn


def clone(bench: common.Bench) -> common.Bench:
    return common.Bench(preset=bench.preset, cfg=bench.cfg, model=copy.deepcopy(bench.model), x=bench.x,
                        cond=bench.cond, spec=bench.spec)


def to_channels_last(bench: common.Bench) -> None:
    """Weights in channels_last, and the network's 4-D input converted on the way in."""
    net = bench.model.network
    net.to(memory_format=torch.channels_last)

    def hook(module: Any, args: tuple[Any, ...]) -> tuple[Any, ...]:
        return (args[0].contiguous(memory_format=torch.channels_last), *args[1:])

    net.register_forward_pre_hook(hook)


@contextlib.contextmanager
def inductor_cache(fresh: bool) -> Iterator[str]:
    """Compile into an empty temporary Inductor cache when `fresh` (else the default one); yields its folder."""
    if not fresh:
        yield os.environ.get("TORCHINDUCTOR_CACHE_DIR", "default")
        return
    with tempfile.TemporaryDirectory(prefix="bfn-bench-inductor-") as folder:
        try:
            from torch._inductor.runtime.cache_dir_utils import temporary_cache_dir  # private, torch >= 2.4
        except ImportError:
            temporary_cache_dir = None
        if temporary_cache_dir is not None:
            with temporary_cache_dir(folder):
                yield folder
            return
        old = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = folder
        try:
            yield folder
        finally:
            if old is None:
                del os.environ["TORCHINDUCTOR_CACHE_DIR"]
            else:
                os.environ["TORCHINDUCTOR_CACHE_DIR"] = old


def error_line(err: BaseException) -> str:
    lines = [ln for ln in str(err).strip().splitlines() if ln.strip()]
    return f"{type(err).__name__}: {lines[0] if lines else ''}"[:500]


# --- experiments ------------------------------------------------------------------------------------------------
def exp_channels_last(bench: common.Bench, args: argparse.Namespace) -> dict[str, Any]:
    device = bench.x.device
    a, b = bench, clone(bench)
    to_channels_last(b)
    diff = float((network_forward(a)() - network_forward(b)()).abs().max())
    train = common.interleaved({"contiguous": common.train_step(a), "channels_last": common.train_step(b)}, device,
                               warmup=args.warmup, repeats=args.rounds)
    fwd = common.interleaved({"contiguous": network_forward(a), "channels_last": network_forward(b)}, device,
                             warmup=args.warmup, repeats=args.rounds)
    train_c, fwd_c = compare(train, "contiguous", items=bench.batch_size), compare(fwd, "contiguous",
                                                                                 items=bench.batch_size)
    return {"batch_size": bench.batch_size, "max_abs_output_difference": diff, "train_step": train_c,
            "network_forward": fwd_c, "verdict": {"train_step": verdict(train_c, "contiguous"),
                                                  "network_forward": verdict(fwd_c, "contiguous")}}


def exp_compile(bench: common.Bench, args: argparse.Namespace) -> dict[str, Any]:
    if args.no_compile:
        return {"skipped": "--no-compile"}
    if args.quick:
        return {"skipped": "--quick (compiling takes minutes on a small CPU)"}
    torch.compiler.reset()
    with inductor_cache(args.compile_cache == "fresh"):
        return _compile(bench, args)


def _compile(bench: common.Bench, args: argparse.Namespace) -> dict[str, Any]:
    device = bench.x.device
    out: dict[str, Any] = {"batch_size": bench.batch_size, "mode": "default (network.compile(), as train.compile)",
                           "inductor_cache": args.compile_cache}
    eager, compiled = bench, clone(bench)
    compiled.model.compile_networks()
    # inference first, while both copies hold the same weights: the no-grad forward compiles its own graph
    fwd_e, fwd_c = network_forward(eager), network_forward(compiled)
    fwd_e()
    eager_fwd = common.time_call(fwd_e, device)
    try:
        first = common.time_call(fwd_c, device)
        out["forward_first_call_seconds"] = first
        out["forward_compile_seconds"] = first - eager_fwd
        out["max_abs_output_difference"] = float((fwd_e() - fwd_c()).abs().max())
        fwd = common.interleaved({"eager": fwd_e, "compiled": fwd_c}, device, warmup=args.warmup,
                                 repeats=args.rounds)
        out["network_forward"] = compare(fwd, "eager", items=bench.batch_size)
    except Exception as err:  # noqa: BLE001 - any compiler failure is a result to report
        out["forward_error"] = error_line(err)
    # training: the first compiled step compiles the forward and backward graphs
    eager_step, compiled_step = common.train_step(eager), common.train_step(compiled)
    eager_step()
    eager_once = common.time_call(eager_step, device)
    try:
        first = common.time_call(compiled_step, device)
        out["train_first_call_seconds"] = first
        out["train_compile_seconds"] = first - eager_once
        train = common.interleaved({"eager": eager_step, "compiled": compiled_step}, device, warmup=args.warmup,
                                   repeats=args.rounds)
        out["train_step"] = compare(train, "eager", items=bench.batch_size)
    except Exception as err:  # noqa: BLE001
        out["train_error"] = error_line(err)
        out["train_traceback_tail"] = traceback.format_exc().strip().splitlines()[-3:]
    out["verdict"] = {k: verdict(out[k], "eager") for k in ("train_step", "network_forward") if k in out}
    return out


def exp_inference_mode(bench: common.Bench, args: argparse.Namespace) -> dict[str, Any]:
    device = bench.x.device
    model = bench.model.eval()
    n = bench.batch_size
    steps = 2 if args.quick else args.sample_steps

    def plain() -> None:
        model.sample(n, steps, generator=torch.Generator(device=device).manual_seed(0))

    def inference() -> None:
        with torch.inference_mode():
            model.sample(n, steps, generator=torch.Generator(device=device).manual_seed(0))

    with torch.inference_mode():
        same = bool(torch.equal(model.sample(n, 2, generator=torch.Generator(device=device).manual_seed(0)),
                                model.sample(n, 2, generator=torch.Generator(device=device).manual_seed(0))))
    times = common.interleaved({"no_grad": plain, "inference_mode": inference}, device, warmup=1,
                               repeats=args.rounds)
    model.train()
    res = compare(times, "no_grad", items=n)
    return {"batch_size": n, "steps": steps, "sampler": "paper", "deterministic_under_inference_mode": same,
            "sample": res, "verdict": verdict(res, "no_grad")}


def thread_counts(args: argparse.Namespace) -> list[int]:
    if args.threads_list:
        return sorted({int(v) for v in args.threads_list.split(",") if v.strip()})
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return sorted({1, min(2, cores), cores})


def exp_threads(bench: common.Bench, args: argparse.Namespace) -> dict[str, Any]:
    device = bench.x.device
    if device.type != "cpu":
        return {"skipped": "CPU only"}
    counts = thread_counts(args)
    original = torch.get_num_threads()
    names = {f"{c}_threads": c for c in counts}
    before = {name: (lambda c=c: torch.set_num_threads(c)) for name, c in names.items()}
    base = f"{counts[0]}_threads"
    try:
        step = common.train_step(bench)
        train = common.interleaved({name: step for name in names}, device, warmup=args.warmup,
                                   repeats=args.rounds, before=before)
        fwd_fn = network_forward(bench)
        fwd = common.interleaved({name: fwd_fn for name in names}, device, warmup=args.warmup, repeats=args.rounds,
                                 before=before)
        peaks = {}
        for name, c in names.items():
            torch.set_num_threads(c)
            peaks[name] = common.matmul_peak(device, n=256 if args.quick else 2048, repeats=3)["gflops_median"]
    finally:
        torch.set_num_threads(original)
    train_c, fwd_c = compare(train, base, items=bench.batch_size), compare(fwd, base, items=bench.batch_size)
    best_train = max(train_c, key=lambda k: train_c[k]["items_per_s"])
    return {"batch_size": bench.batch_size, "thread_counts": counts, "train_step": train_c, "network_forward": fwd_c,
            "matmul_peak_gflops": peaks, "best_for_training": best_train,
            "best_for_forward": max(fwd_c, key=lambda k: fwd_c[k]["items_per_s"]),
            "verdict": {"train_step": verdict(train_c, base), "network_forward": verdict(fwd_c, base)}}


def exp_batch_size(bench: common.Bench, args: argparse.Namespace) -> dict[str, Any]:
    device = bench.x.device
    sizes = [2, 4] if args.quick else [int(v) for v in args.batch_sizes.split(",")]
    peak = common.matmul_peak(device, n=256 if args.quick else 2048, repeats=3 if args.quick else 7)
    steps, flops, memory = {}, {}, {}
    for b in sizes:
        bb = common.build(PRESET, device, batch_size=b, seed=args.seed)
        flops[b] = common.count_flops(common.loss_backward(bb)) / b
        steps[f"batch_{b}"] = common.train_step(bb)
        with common.peak_memory(device) as mem:
            steps[f"batch_{b}"]()
        memory[f"batch_{b}"] = mem
    times = common.interleaved(steps, device, warmup=max(args.warmup - 1, 0), repeats=args.rounds)
    out: dict[str, Any] = {"matmul_peak": peak, "flops_train_per_image": flops[sizes[0]], "batches": {}}
    for b in sizes:
        name = f"batch_{b}"
        sec = common.median(times[name])
        gflops = flops[b] * b / sec / 1e9
        out["batches"][name] = {"batch_size": b, "seconds": times[name], "seconds_median": sec,
                                "spread": common.spread(times[name]), "images_per_s": b / sec,
                                "achieved_gflops": gflops,
                                "fraction_of_fp32_matmul_peak": gflops / peak["gflops_median"],
                                "first_step_memory": memory[name]}
    base = out["batches"][f"batch_{sizes[0]}"]["images_per_s"]
    for row in out["batches"].values():
        row["throughput_vs_smallest"] = row["images_per_s"] / base
    return out


def exp_optimizer(bench: common.Bench, args: argparse.Namespace) -> dict[str, Any]:
    device = bench.x.device
    variants: dict[str, dict[str, Any]] = {"default": {}, "foreach": {"foreach": True}, "fused": {"fused": True}}
    benches = {name: clone(bench) for name in variants}
    steps, out = {}, {"batch_size": bench.batch_size, "variants": {k: str(v) for k, v in variants.items()}}
    for name, kw in variants.items():
        try:
            steps[name] = common.train_step(benches[name], optimizer=kw)
            steps[name]()
        except Exception as err:  # noqa: BLE001 - an unsupported option is a result
            out[f"{name}_error"] = error_line(err)
            steps.pop(name, None)
    train = common.interleaved(steps, device, warmup=args.warmup, repeats=args.rounds)
    out["train_step"] = compare(train, "default", items=bench.batch_size)
    # optimizer.step() alone, on fixed random gradients
    tc = bench.cfg.train
    opt_steps = {}
    for name in steps:
        model = clone(bench).model
        gen = torch.Generator().manual_seed(0)
        for p in model.parameters():
            p.grad = (torch.randn(p.shape, generator=gen) * 1e-3).to(p.device)
        opt = torch.optim.AdamW(model.parameters(), lr=tc.lr, betas=tuple(tc.betas), weight_decay=tc.weight_decay,
                                **variants[name])
        opt_steps[name] = opt.step
    opt_times = common.interleaved(opt_steps, device, warmup=args.warmup, repeats=args.rounds, iters=5)
    out["optimizer_step"] = compare(opt_times, "default")
    out["verdict"] = {"train_step": verdict(out["train_step"], "default"),
                      "optimizer_step": verdict(out["optimizer_step"], "default")}
    return out


def exp_overhead(bench: common.Bench, args: argparse.Namespace) -> dict[str, Any]:
    device = bench.x.device
    times = common.interleaved({"train_step": common.train_step(bench), "network_fwd_bwd": network_train(bench)},
                               device, warmup=args.warmup, repeats=args.rounds)
    step, net = common.median(times["train_step"]), common.median(times["network_fwd_bwd"])
    return {"batch_size": bench.batch_size, "train_step_seconds": times["train_step"],
            "network_fwd_bwd_seconds": times["network_fwd_bwd"], "train_step_median": step,
            "network_fwd_bwd_median": net, "non_network_share": max(0.0, 1 - net / step)}


def exp_bf16_network(bench: common.Bench, args: argparse.Namespace) -> dict[str, Any]:
    device = bench.x.device
    try:
        times = common.interleaved({"float32": network_train(bench), "bf16_autocast": network_train(bench, bf16=True)},
                                   device, warmup=args.warmup, repeats=args.rounds)
    except Exception as err:  # noqa: BLE001 - bf16 unsupported on this device is a result
        return {"error": error_line(err)}
    res = compare(times, "float32", items=bench.batch_size)
    return {"batch_size": bench.batch_size, "network_fwd_bwd": res, "verdict": verdict(res, "float32")}


RUNNERS: dict[str, Callable[[common.Bench, argparse.Namespace], dict[str, Any]]] = {
    "channels_last": exp_channels_last, "compile": exp_compile, "inference_mode": exp_inference_mode,
    "threads": exp_threads, "batch_size": exp_batch_size, "optimizer": exp_optimizer, "overhead": exp_overhead,
    "bf16_network": exp_bf16_network,
}


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run the chosen experiments; returns what optimisations.json holds."""
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = sorted(set(only) - set(RUNNERS))
    if unknown:
        raise SystemExit(f"unknown experiment(s) {', '.join(unknown)}; choose from {', '.join(RUNNERS)}")
    if args.bf16:
        raise SystemExit("--bf16 does not apply here: the bf16_network experiment measures autocast against float32")
    if args.quick:
        args.rounds, args.warmup = 2, 1
    device = common.setup_runtime(args)
    result: dict[str, Any] = {"benchmark": "optimisations", "quick": args.quick,
                              "environment": common.environment(device), "preset": PRESET, "rounds": args.rounds,
                              "experiments": {}}
    for name in only:
        bench = common.build(PRESET, device, batch_size=4 if args.quick else None, seed=args.seed)
        t0 = time.perf_counter()
        try:
            res = RUNNERS[name](bench, args)
        except Exception as err:  # noqa: BLE001 - one failing experiment must not lose the others
            res = {"error": error_line(err), "traceback_tail": traceback.format_exc().strip().splitlines()[-3:]}
        res["wall_seconds"] = time.perf_counter() - t0
        result["experiments"][name] = res
        print(f"{name}: {summary_line(name, res)} ({res['wall_seconds']:.0f} s)", flush=True)
    return result


def summary_line(name: str, res: dict[str, Any]) -> str:
    if "error" in res:
        return f"error: {res['error']}"
    if "skipped" in res:
        return f"skipped ({res['skipped']})"
    if name == "batch_size":
        return ", ".join(f"{r['batch_size']}: {r['images_per_s']:.1f} img/s "
                         f"({100 * r['fraction_of_fp32_matmul_peak']:.0f}% of mm peak)"
                         for r in res["batches"].values())
    if name == "overhead":
        return f"{100 * res['non_network_share']:.0f}% of a training step is outside the network"
    v = res.get("verdict")
    if isinstance(v, dict):
        return "; ".join(f"{k}: {s}" for k, s in v.items())
    return str(v)


def _variants_rows(title: str, variants: dict[str, Any], unit: str) -> list[list[str]]:
    return [[title, name, common.fmt(1e3 * v["seconds_median"], 2), common.fmt(v["items_per_s"], 1) + unit,
             f"x{v['speedup']:.2f}", f"{100 * v['wins']:.0f}%", f"{100 * v['spread']:.0f}%"]
            for name, v in variants.items()]


def markdown(result: dict[str, Any]) -> str:
    env = result["environment"]
    lines = [f"### Optimisation experiments, {result['preset']} ({common.env_line(env)})", "",
             f"Interleaved rounds: {result['rounds']}; speedup = median over rounds of baseline time / variant time "
             "(first row of each block is the baseline); wins = share of rounds faster than the baseline.", ""]
    rows: list[list[str]] = []
    exps = result["experiments"]
    for name, res in exps.items():
        if "error" in res or "skipped" in res or name in ("batch_size", "overhead"):
            continue
        for key in ("train_step", "network_forward", "sample", "optimizer_step", "network_fwd_bwd"):
            if key in res:
                unit = "" if key == "optimizer_step" else " img/s"
                rows += _variants_rows(f"{name}: {key}", res[key], unit)
    lines.append(common.table(["experiment", "variant", "ms", "per s", "speedup", "wins", "spread"], rows,
                              "llrrrrr"))
    c = exps.get("compile", {})
    timed = (("no-grad forward graph", "forward_compile_seconds"), ("training graphs", "train_compile_seconds"))
    parts = [f"{what} {c[key]:.1f} s" for what, key in timed if key in c]
    parts += [f"{what} failed: {c[key]}" for what, key in (("forward", "forward_error"), ("training", "train_error"))
              if key in c]
    if parts:
        diff = c.get("max_abs_output_difference")
        lines += ["", f"torch.compile ({c.get('inductor_cache')} Inductor cache): " + "; ".join(parts)
                  + (f"; largest output difference {diff:.2e}" if diff is not None else "") + "."]
    if "channels_last" in exps and "max_abs_output_difference" in exps["channels_last"]:
        lines += ["", "channels_last: largest output difference "
                  f"{exps['channels_last']['max_abs_output_difference']:.2e}."]
    if "batch_size" in exps and "batches" in exps["batch_size"]:
        bs = exps["batch_size"]
        lines += ["", common.table(["batch", "img/s", "vs smallest", "GFLOP/s", "% of mm peak", "spread"], [
            [r["batch_size"], common.fmt(r["images_per_s"]), f"x{r['throughput_vs_smallest']:.2f}",
             common.fmt(r["achieved_gflops"]), f"{100 * r['fraction_of_fp32_matmul_peak']:.0f}%",
             f"{100 * r['spread']:.0f}%"] for r in bs["batches"].values()]),
            "", f"fp32 matmul peak {bs['matmul_peak']['gflops_median']:.1f} GFLOP/s."]
    if "overhead" in exps and "non_network_share" in exps["overhead"]:
        o = exps["overhead"]
        lines += ["", f"Training step {1e3 * o['train_step_median']:.0f} ms, network forward + backward alone "
                  f"{1e3 * o['network_fwd_bwd_median']:.0f} ms: {100 * o['non_network_share']:.0f}% outside the "
                  "network."]
    lines += ["", "Verdicts:"]
    lines += [f"- {name}: {summary_line(name, res)}" for name, res in exps.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    result = run(args)
    path = common.write_json(args.out, "optimisations", result)
    print(markdown(result))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

