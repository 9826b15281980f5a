"""GPU training efficiency: bfn's settings (bf16 autocast, channels-last, fused AdamW, torch.compile) against the
official BFN code's own settings, on the official MNIST and CIFAR-10 networks.

    python -m benchmarks.gpu_speed                      # CUDA: a few minutes on one GPU (estimate; not yet run)
    python -m benchmarks.gpu_speed --dry-run            # CPU plumbing check (tiny batches; numbers mean nothing)

Per network (MNIST: the official `mnist_discrete` config, batch 512; CIFAR-10: `cifar10_discretized_256bins`,
batch 32; `--nets` picks), the official code (a local clone, `--official` or $BFN_OFFICIAL) trains its own BFN as its
`train.py` does: fp32 weights with TF32 matmuls (`torch.set_float32_matmul_precision("high")`, which its train.py
sets; cuDNN convolutions use TF32 by default), AdamW with its config's settings, grad clip, its EMA loop. bfn trains
its model with the official-compatible network (`official-mnist-unet`; the `cifar10-discretized-256` preset's
`official-cifar-unet`; where bfn lacks one, that cell says so) from the same weights, through the trainer's step
(`benchmarks.common.train_step`), in cumulative variants:

- `fp32`: the official settings (TF32), bfn's step;
- `bf16`: + bfloat16 autocast (the loss stays float32, as the trainer does);
- `bf16+cl`: + channels-last weights and activations;
- `bf16+cl+fused`: + fused AdamW (one kernel for all parameters);
- `bf16+cl+fused+compile`: + torch.compile of the network (compilation time reported apart, not in the rate).

Data: random batches of the right kind and shape (MNIST: the embedded binarized digits; CIFAR-10: uniform values on
the 256 bin centres; the machine has no internet): the step's cost does not depend on the values. Timing: warm-up
steps, then the median of `--repeats` timed blocks of `--iters` steps (CUDA synchronised), images/s and the ratio to
the official code. Loss check: from the same weights and seed, the official code and bfn's fastest variant train
`--curve-steps` steps each on the same batches; the JSON holds both loss curves and the mean loss of the last half
with its standard error, so a change beyond noise shows.

Writes gpu_speed.json into $OUT when that variable is set (the device machine's output folder), else into `--out`
(benchmarks/results), and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import copy
import math
import os
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks import common
from benchmarks.official_speed import import_official

NETS = {
    "mnist": {"official_config": "configs/mnist_discrete.yaml", "preset": "mnist-discrete-paper",
              "network": "official-mnist-unet", "batch": 512, "shape": (1, 28, 28)},
    "cifar10": {"official_config": "configs/cifar10_discretized_256bins.yaml", "preset": "cifar10-discretized-256",
                "network": "official-cifar-unet", "batch": 32, "shape": (3, 32, 32)},
}
VARIANTS = ("fp32", "bf16", "bf16+cl", "bf16+cl+fused", "bf16+cl+fused+compile")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.gpu_speed", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--official", default=os.environ.get("BFN_OFFICIAL", "/work/official"),
                   help="path of a clone of nnaisense/bayesian-flow-networks")
    p.add_argument("--nets", default="mnist,cifar10", help="comma-separated: mnist, cifar10")
    p.add_argument("--variants", default=",".join(VARIANTS), help="bfn variants, comma separated")
    p.add_argument("--warmup", type=int, default=5, help="untimed steps per cell (after compilation)")
    p.add_argument("--repeats", type=int, default=3, help="timed blocks per cell (median reported)")
    p.add_argument("--iters", type=int, default=10, help="steps per timed block")
    p.add_argument("--curve-steps", type=int, default=100, help="steps of the loss-curve check per side (0: skip)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dry-run", action="store_true",
                   help="CPU plumbing check: batch 2, 1 block of 1 step, 4 curve steps, no compile")
    p.add_argument("--out", default=str(common.RESULTS), help="directory for gpu_speed.json (when $OUT is unset)")
    return p.parse_args(argv)


# --- the two sides ------------------------------------------------------------------------------------------
def official_model(path: str, net: dict[str, Any], device: torch.device, seed: int
                   ) -> tuple[torch.nn.Module, Any]:
    from omegaconf import OmegaConf

    utils_train = import_official(path)
    cfg = OmegaConf.load(Path(path) / net["official_config"])
    torch.manual_seed(seed)
    model = utils_train.make_bfn(cfg.model)
    common.randomize_zero_init(model, seed)
    return model.to(device), cfg


def data(net: dict[str, Any], batch: int, seed: int, device: torch.device) -> torch.Tensor:
    """A batch in bfn's layout: binarized MNIST digits (long) or CIFAR-like values on the 256 bin centres."""
    gen = torch.Generator().manual_seed(seed)
    if net["preset"].startswith("mnist"):
        from bfn.data import load_dataset
        from bfn.evaluation.nll import materialize

        x = materialize(load_dataset("mnist-binarized", "train")[0], limit=batch, seed=seed).long()
        if x.shape[0] < batch:
            x = x.repeat(math.ceil(batch / x.shape[0]), 1, 1, 1)[:batch]
        return x.to(device)
    k = torch.randint(0, 256, (batch, *net["shape"]), generator=gen)
    return ((2 * k + 1) / 256 - 1).to(device)  # bin centres (2k + 1)/K - 1


def official_step(model: torch.nn.Module, cfg: Any, x_off: torch.Tensor, utils_train: Any
                  ) -> tuple[Any, list[float]]:
    """The official train.py step (fp32 / TF32), returning (step function, list its losses go into)."""
    opt_kwargs = {k: (tuple(v) if k == "betas" else v) for k, v in cfg.optimizer.items()}
    opt = torch.optim.AdamW(model.parameters(), **opt_kwargs)
    ema = copy.deepcopy(model)
    clip = float(cfg.training.grad_clip_norm)
    decay = float(cfg.training.ema_decay)
    losses: list[float] = []

    def step() -> None:
        loss = model(x_off)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        utils_train.update_ema(ema, model, decay)
        losses.append(loss.detach())

    return step, losses


def bfn_bench(net: dict[str, Any], official_cfg: Any, weights: dict[str, torch.Tensor], x: torch.Tensor,
              device: torch.device, seed: int) -> common.Bench | None:
    """bfn's model with the official-compatible network and the official weights, or None when bfn lacks it."""
    from bfn.config import list_presets, load_config
    from bfn.data.registry import list_datasets
    from bfn.errors import ConfigError
    from bfn.models.hub import build_model
    from bfn.networks.registry import NETWORKS

    if net["preset"] not in list_presets() or net["network"] not in NETWORKS:
        return None
    try:
        cfg = load_config(net["preset"])
    except ConfigError:  # a preset of a newer bfn (e.g. options this checkout lacks)
        return None
    if cfg.model.network.name != net["network"]:
        cfg.model.network.name, cfg.model.network.kwargs = net["network"], {}
    opt = official_cfg.optimizer
    cfg.train.lr, cfg.train.betas = float(opt.lr), [float(b) for b in opt.betas]
    cfg.train.weight_decay = float(opt.get("weight_decay", 0.01))  # AdamW's default where the config has none
    cfg.train.grad_clip, cfg.train.ema_decay = float(official_cfg.training.grad_clip_norm), float(
        official_cfg.training.ema_decay)
    spec = next(e.spec for e in list_datasets() if e.spec.name == cfg.data.name)
    torch.manual_seed(seed)
    model = build_model(cfg.model, spec)
    own = model.network.state_dict()  # the official input adapter's unused position table is dropped
    model.network.load_state_dict({k.removeprefix("net."): v for k, v in weights.items()
                                   if k.removeprefix("net.") in own})
    return common.Bench(preset=net["preset"], cfg=cfg, model=model.to(device), x=x, cond=None, spec=spec)


def bfn_step(bench: common.Bench, variant: str, device: torch.device) -> tuple[Any, list[Any], float]:
    """bfn's trainer step in `variant`; returns (step, its losses, compile seconds)."""
    model = bench.model
    if "cl" in variant.split("+"):
        model.to(memory_format=torch.channels_last)
    compile_s = 0.0
    if "compile" in variant:
        model.network.compile()
    optimizer = {"fused": True} if "fused" in variant else ({"foreach": True} if device.type == "cuda" else None)
    step = common.train_step(bench, bf16=variant.startswith("bf16"), optimizer=optimizer)
    losses: list[Any] = []
    dims = bench.x[0].numel()
    handle = model.register_forward_hook(
        lambda mod, args, out: losses.append(out.detach().mean() / dims) if out.requires_grad else None)
    if "compile" in variant:
        t0 = time.perf_counter()
        step()
        step()
        common.synchronize(device)
        compile_s = time.perf_counter() - t0
    step.handle = handle  # type: ignore[attr-defined]
    return step, losses, compile_s


# --- measuring ----------------------------------------------------------------------------------------------
def timed(step: Any, device: torch.device, args: argparse.Namespace) -> list[float]:
    return common.measure(step, device, warmup=args.warmup, repeats=args.repeats, iters=args.iters)


def curve_summary(losses: list[Any]) -> dict[str, Any]:
    values = [float(v) for v in losses]
    half = values[len(values) // 2:]
    sem = statistics.stdev(half) / math.sqrt(len(half)) if len(half) > 1 else math.nan
    return {"losses": values, "last_half_mean": statistics.fmean(half) if half else math.nan,
            "last_half_sem": sem}


def bench_net(name: str, args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    net = NETS[name]
    batch = 2 if args.dry_run else net["batch"]
    utils_train = import_official(args.official)
    off, off_cfg = official_model(args.official, net, device, args.seed)
    weights = {k: v.detach().clone() for k, v in off.state_dict().items()}
    x = data(net, batch, args.seed, device)
    x_off = x.permute(0, 2, 3, 1).contiguous()  # the official layout [B, H, W, C]
    if net["preset"].startswith("mnist"):
        x_off = x_off.int()
    out: dict[str, Any] = {"batch_size": batch, "official_parameters": sum(p.numel() for p in off.net.parameters())}

    # loss curves first, from fresh copies of the same weights, on the same batch and seed
    fastest = [v for v in args.variants.split(",") if v][-1]
    if args.curve_steps > 0:
        off_curve, off_losses = official_step(copy.deepcopy(off), off_cfg, x_off, utils_train)
        torch.manual_seed(args.seed)
        for _ in range(args.curve_steps):
            off_curve()
        out["curve_official"] = curve_summary(off_losses)
        bench = bfn_bench(net, off_cfg, weights, x, device, args.seed)
        if bench is not None:
            step, losses, _ = bfn_step(bench, fastest.replace("+compile", "") if args.dry_run else fastest, device)
            torch.manual_seed(args.seed)
            for _ in range(args.curve_steps):
                step()
            out["curve_bfn"] = {"variant": fastest, **curve_summary(losses)}
            del bench, step

    step, _ = official_step(off, off_cfg, x_off, utils_train)
    sec = common.median(timed(step, device, args))
    out["official"] = {"settings": "fp32 weights, TF32 matmuls/convs (the official train.py)",
                       "seconds_per_step": sec, "images_per_s": batch / sec}
    print(f"{name:8s} official                      {batch / sec:10.1f} img/s", flush=True)
    del step, off
    cells = []
    for variant in [v for v in args.variants.split(",") if v]:
        if args.dry_run and "compile" in variant:
            cells.append({"variant": variant, "skipped": "no compile in a dry run"})
            continue
        bench = bfn_bench(net, off_cfg, weights, x, device, args.seed)
        if bench is None:
            cells.append({"variant": variant, "skipped": f"bfn has no {net['network']} / {net['preset']} yet"})
            continue
        step, _, compile_s = bfn_step(bench, variant, device)
        memory_ctx = common.peak_memory(device)
        with memory_ctx as memory:
            sec = common.median(timed(step, device, args))
        cell = {"variant": variant, "seconds_per_step": sec, "images_per_s": batch / sec,
                "ratio_to_official": out["official"]["seconds_per_step"] / sec, "compile_seconds": compile_s,
                "network_dtype": common.network_dtype(bench, bf16=variant.startswith("bf16")), "memory": memory}
        cells.append(cell)
        print(f"{name:8s} bfn {variant:26s} {cell['images_per_s']:10.1f} img/s  "
              f"{cell['ratio_to_official']:.2f}x", flush=True)
        del bench, step
        if device.type == "cuda":
            torch.cuda.empty_cache()
    out["bfn"] = cells
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    if args.dry_run:
        device = torch.device("cpu")
        args.warmup, args.repeats, args.iters, args.curve_steps = 1, 1, 1, min(args.curve_steps, 4)
    else:
        if not torch.cuda.is_available():
            raise SystemExit("no CUDA device: run with --dry-run to check the plumbing on a CPU")
        device = torch.device("cuda")
    torch.set_float32_matmul_precision("high")  # the official train.py's setting, for both sides
    t0 = time.perf_counter()
    nets: dict[str, Any] = {}
    partial: dict[str, Any] = {}
    for name in [n.strip() for n in args.nets.split(",") if n.strip()]:
        if name not in NETS:
            raise SystemExit(f"unknown net {name!r}; choose from {', '.join(NETS)}")
        nets[name] = bench_net(name, args, device)
        partial = {"benchmark": "gpu_speed", "dry_run": args.dry_run, "environment": common.environment(device),
                   "nets": nets, "wall_seconds": time.perf_counter() - t0}
        common.write_json(output_dir(args), "gpu_speed", partial)  # what is done survives a time limit
    return partial


def markdown(result: dict[str, Any]) -> str:
    rows = []
    for name, r in result["nets"].items():
        rows.append([name, "official (fp32/TF32)", r["batch_size"], common.fmt(r["official"]["images_per_s"]),
                     "1.00x", "", ""])
        for c in r["bfn"]:
            if "skipped" in c:
                rows.append([name, f"bfn {c['variant']}", r["batch_size"], "-", "-", "", c["skipped"]])
            else:
                rows.append([name, f"bfn {c['variant']}", r["batch_size"], common.fmt(c["images_per_s"]),
                             f"{c['ratio_to_official']:.2f}x", c["network_dtype"],
                             f"compile {c['compile_seconds']:.0f} s" if c["compile_seconds"] else ""])
    lines = [f"### GPU training, bfn vs the official code{' (dry run: not a measurement)' if result['dry_run'] else ''}"
             f" ({common.env_line(result['environment'])})", "",
             common.table(["net", "side / variant", "batch", "img/s", "vs official", "net dtype", "note"], rows), ""]
    for name, r in result["nets"].items():
        if "curve_official" in r:
            o = r["curve_official"]
            line = (f"{name}: loss over {len(o['losses'])} steps from the same weights, last-half mean: official "
                    f"{o['last_half_mean']:.4f} ± {o['last_half_sem']:.4f}")
            if "curve_bfn" in r:
                b = r["curve_bfn"]
                line += f", bfn {b['variant']} {b['last_half_mean']:.4f} ± {b['last_half_sem']:.4f}"
            lines.append(line + " (± one standard error).")
    lines.append(f"Wall time {result['wall_seconds']:.0f} s.")
    return "\n".join(lines)


def output_dir(args: argparse.Namespace) -> str:
    return os.environ.get("OUT") or args.out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    result = run(args)
    path = common.write_json(output_dir(args), "gpu_speed", result)
    print(markdown(result))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
