"""Shared pieces of the performance benchmarks: the machine description, timers, peak memory, FLOP counts, the
fp32 matmul peak, building a preset's model with a data batch, and one trainer-like optimisation step.

Not run on its own; see `python -m benchmarks --help` and the docstrings of `benchmarks.training`,
`benchmarks.sampling`, `benchmarks.nll` and `benchmarks.optimisations`.

Conventions of every benchmark here:
- a timing is the median of several timed repeats, after untimed warm-up iterations (first-call allocations,
  oneDNN primitive creation, CUDA context and autotuning);
- CUDA timings synchronise before the clock is read;
- FLOPs are those `torch.utils.flop_counter.FlopCounterMode` counts: matrix multiplications, convolutions and
  attention (2 FLOPs per multiply-add); element-wise work (normalisation, activations, the flow's math, the
  optimizer) is real time but zero FLOPs;
- peak memory on CPU is the peak resident set size of this process during the measured phase (Linux resets the
  high-water mark through /proc/self/clear_refs; elsewhere it is the peak of the whole process so far, and
  `peak_rss_scope` says "process"); on CUDA it is also `torch.cuda.max_memory_allocated`.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import datetime
import gc
import json
import math
import os
import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

RESULTS = Path(__file__).resolve().parent / "results"
MiB = 1024 * 1024


# --- the machine ------------------------------------------------------------------------------------------------
def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (Linux), else what `platform` knows."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "unknown"


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return cpu_model()


def environment(device: torch.device, *, bf16: bool = False) -> dict[str, Any]:
    """What a timing depends on: versions, threads, CPU/GPU, dtype and autocast, and the load at the start (a
    1-minute load average near or above the thread count means the figures are contended)."""
    try:
        affinity: int | None = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        affinity = None
    env: dict[str, Any] = {
        "timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "threads": torch.get_num_threads(),
        "interop_threads": torch.get_num_interop_threads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "cpu_count": os.cpu_count(),
        "cpu_affinity": affinity,
        "cpu_model": cpu_model(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),  # the SIMD level ATen dispatches to
        "device": str(device),
        "device_name": device_name(device),
        "dtype": "float32",
        "autocast": "bfloat16" if bf16 else None,
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
        "load_average_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
    }
    if device.type == "cuda":
        env["cuda"] = torch.version.cuda
        env["cudnn"] = torch.backends.cudnn.version()
    return env


def setup_runtime(args: argparse.Namespace) -> torch.device:
    """Apply --threads and --device; a CUDA request without a GPU is an error, not a silent CPU run."""
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda was asked for but no CUDA GPU is visible")
    if args.threads:
        torch.set_num_threads(args.threads)
    return device


def add_common_args(p: argparse.ArgumentParser) -> None:
    """The flags every benchmark script shares."""
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--threads", type=int, default=0,
                   help="torch intra-op threads (0: leave torch's default, the number of cores it sees)")
    p.add_argument("--bf16", action="store_true", help="run the models under torch.autocast(bfloat16)")
    p.add_argument("--quick", action="store_true", help="tiny smoke run (seconds): tiny batches, few repeats")
    p.add_argument("--out", default=str(RESULTS), help="folder for the JSON results")
    p.add_argument("--seed", type=int, default=0, help="seed of the weights and the data batch")


# --- clocks -----------------------------------------------------------------------------------------------------
def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_call(fn: Callable[[], Any], device: torch.device) -> float:
    """Seconds one call of `fn` takes (CUDA work included)."""
    synchronize(device)
    t0 = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - t0


def measure(fn: Callable[[], Any], device: torch.device, *, warmup: int, repeats: int, iters: int = 1
            ) -> list[float]:
    """Seconds per call of `fn`, one entry per timed repeat (each repeat times `iters` calls), after `warmup`
    untimed calls."""
    for _ in range(warmup):
        fn()

    def block() -> None:
        for _ in range(iters):
            fn()

    return [time_call(block, device) / iters for _ in range(repeats)]


def interleaved(fns: dict[str, Callable[[], Any]], device: torch.device, *, warmup: int, repeats: int,
                iters: int = 1, before: dict[str, Callable[[], Any]] | None = None) -> dict[str, list[float]]:
    """A/B(/C...) timing: every round times each variant once, in a rotated order, so that drifting load or
    clock speed hits all variants alike. `before[name]()` runs untimed before each of that variant's calls
    (e.g. to set the thread count). Returns seconds per call, one entry per round, for each variant."""
    before = before or {}
    names = list(fns)
    for name in names:
        before.get(name, lambda: None)()
        for _ in range(warmup):
            fns[name]()
    out: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        for name in names[r % len(names):] + names[:r % len(names)]:
            before.get(name, lambda: None)()

            def block(name: str = name) -> None:
                for _ in range(iters):
                    fns[name]()

            out[name].append(time_call(block, device) / iters)
    return out


def median(values: list[float]) -> float:
    return float(statistics.median(values)) if values else math.nan


def spread(values: list[float]) -> float:
    """(max - min) / median of the repeats: how noisy a timing was."""
    if len(values) < 2:
        return 0.0
    return (max(values) - min(values)) / median(values)


# --- memory -----------------------------------------------------------------------------------------------------
def _status_kib(key: str) -> int | None:
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return None


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark of this process (Linux >= 4.0); False where that is not possible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return _status_kib("VmHWM") is not None


def _maxrss_kib() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak // 1024 if sys.platform == "darwin" else peak  # bytes on macOS, KiB on Linux


def release_memory() -> None:
    """Collect garbage and hand freed heap pages back to the OS (glibc malloc_trim), so that a phase's RSS is not
    inflated by what earlier phases freed but the allocator kept."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


@contextlib.contextmanager
def peak_memory(device: torch.device) -> Iterator[dict[str, Any]]:
    """Fills the yielded dict on exit: peak RSS (MiB) during the block, RSS before it and the difference; on CUDA
    also the peak of allocated GPU memory during the block."""
    stats: dict[str, Any] = {}
    release_memory()
    phase = _reset_peak_rss()
    before = _status_kib("VmRSS")
    if device.type == "cuda":
        synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    try:
        yield stats
    finally:
        synchronize(device)
        peak = _status_kib("VmHWM") if phase else None
        stats["peak_rss_mib"] = (peak if peak is not None else _maxrss_kib()) / 1024
        stats["peak_rss_scope"] = "phase" if peak is not None else "process"
        stats["rss_before_mib"] = before / 1024 if before is not None else None
        if before is not None:
            stats["rss_increase_mib"] = stats["peak_rss_mib"] - before / 1024
        if device.type == "cuda":
            stats["cuda_max_allocated_mib"] = torch.cuda.max_memory_allocated(device) / MiB


# --- FLOPs ------------------------------------------------------------------------------------------------------
def count_flops(fn: Callable[[], Any]) -> int:
    """FLOPs of one call of `fn` as FlopCounterMode counts them (matmuls, convolutions, attention)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def matmul_peak(device: torch.device, *, n: int = 2048, repeats: int = 7, dtype: torch.dtype = torch.float32
                ) -> dict[str, Any]:
    """The attainable matmul rate of this machine at the current thread count: GFLOP/s of an n x n by n x n
    torch.mm (2 n^3 FLOPs), median and best of `repeats` after one warm-up."""
    gen = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(n, n, device=device, dtype=dtype, generator=gen)
    b = torch.randn(n, n, device=device, dtype=dtype, generator=gen)
    out = torch.empty(n, n, device=device, dtype=dtype)
    times = measure(lambda: torch.mm(a, b, out=out), device, warmup=1, repeats=repeats)
    flops = 2.0 * n**3
    return {"n": n, "dtype": str(dtype).removeprefix("torch."), "threads": torch.get_num_threads(),
            "gflops_median": flops / median(times) / 1e9, "gflops_best": flops / min(times) / 1e9,
            "seconds": times}


def conv_shapes(net: nn.Module, run: Callable[[], Any]) -> list[dict[str, Any]]:
    """The stride-1 3x3 convolutions `net` runs during `run()`, grouped by shape (c_in, c_out, H, W, batch), with
    their forward FLOPs (2 B H W c_in c_out 9 per call), largest share first."""
    tally: dict[tuple[int, int, int, int, int], float] = {}

    def hook(mod: nn.Module, args: tuple[Any, ...], out: Tensor) -> None:
        b, c_out, h, w = out.shape
        key = (mod.in_channels, c_out, h, w, b)
        tally[key] = tally.get(key, 0.0) + 2.0 * b * h * w * mod.in_channels * c_out * 9

    handles = [m.register_forward_hook(hook) for m in net.modules()
               if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3) and m.stride == (1, 1) and m.groups == 1]
    try:
        run()
    finally:
        for h in handles:
            h.remove()
    total = sum(tally.values()) or 1.0
    return [{"c_in": k[0], "c_out": k[1], "height": k[2], "width": k[3], "batch": k[4], "flops": v,
             "share": v / total} for k, v in sorted(tally.items(), key=lambda kv: -kv[1])]


def conv_peak(device: torch.device, *, c_in: int, c_out: int, height: int, width: int, batch: int,
              backward: bool = True, repeats: int = 7, dtype: torch.dtype = torch.float32) -> dict[str, Any]:
    """The attainable convolution rate at one shape: GFLOP/s of torch's own 3x3 convolution (nn.Conv2d, padding 1)
    on [batch, c_in, height, width] -> c_out, forward + backward (input and weight gradients: 3x the forward
    FLOPs) when `backward`, else forward only; median and best of `repeats` after two warm-ups. This is the
    ceiling a conv network's training (or sampling) rate is compared with: a large fp32 torch.mm goes through
    another library (MKL rather than oneDNN on CPU) and can be far from what a convolution reaches."""
    gen = torch.Generator().manual_seed(0)
    conv = nn.Conv2d(c_in, c_out, 3, padding=1).to(device=device, dtype=dtype)
    x = torch.randn(batch, c_in, height, width, generator=gen).to(device=device, dtype=dtype)
    if backward:
        x.requires_grad_(True)
        grad = torch.randn(batch, c_out, height, width, generator=gen).to(device=device, dtype=dtype)

        def fn() -> None:
            conv(x).backward(grad)
            x.grad = None
            conv.zero_grad(set_to_none=True)
    else:
        def fn() -> None:
            with torch.no_grad():
                conv(x)

    times = measure(fn, device, warmup=2, repeats=repeats)
    flops = 2.0 * batch * height * width * c_in * c_out * 9 * (3 if backward else 1)
    return {"c_in": c_in, "c_out": c_out, "height": height, "width": width, "batch": batch, "backward": backward,
            "dtype": str(dtype).removeprefix("torch."), "threads": torch.get_num_threads(),
            "gflops_median": flops / median(times) / 1e9, "gflops_best": flops / min(times) / 1e9,
            "seconds": times}


def network_conv_peak(net: nn.Module, run: Callable[[], Any], device: torch.device, *, backward: bool,
                      repeats: int = 7) -> dict[str, Any] | None:
    """`conv_peak` at the shape that carries the largest share of `net`'s 3x3 convolution FLOPs in `run()` (its
    channel counts, resolution and batch); None for a network without 3x3 convolutions."""
    shapes = conv_shapes(net, run)
    if not shapes:
        return None
    top = shapes[0]
    peak = conv_peak(device, c_in=top["c_in"], c_out=top["c_out"], height=top["height"], width=top["width"],
                     batch=top["batch"], backward=backward, repeats=repeats)
    peak["share_of_network_conv_flops"] = top["share"]
    return peak


# --- models and data --------------------------------------------------------------------------------------------
@dataclass
class Bench:
    """A preset's model on a device with one fixed data batch (labels for conditional models)."""

    preset: str
    cfg: Any  # bfn.config.RunConfig
    model: nn.Module
    x: Tensor
    cond: Tensor | None
    spec: Any  # bfn.data.registry.DataSpec

    @property
    def batch_size(self) -> int:
        return int(self.x.shape[0])

    @property
    def parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters())


def randomize_zero_init(model: nn.Module, seed: int = 0, std: float = 0.02) -> None:
    """Give zero-initialised weights (the networks' output layers) small random values, so that an untrained
    network's output depends on its input, as a trained one's does (timings of a constant output would not
    change, but sampling trajectories would be degenerate)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim >= 2 and not p.any():
                p.copy_(torch.randn(p.shape, generator=gen) * std)


def build(preset: str, device: torch.device, *, batch_size: int | None = None, seed: int = 0,
          split: str = "train") -> Bench:
    """The preset's model (random weights from `seed`) and a batch of `batch_size` (default: the preset's) real
    examples of its dataset, drawn once (dynamic binarization included)."""
    from bfn.config import load_config
    from bfn.data import load_dataset
    from bfn.evaluation.nll import materialize
    from bfn.models.hub import build_model

    cfg = load_config(preset)
    dataset, spec = load_dataset(cfg.data.name, split, root=cfg.data.root, **cfg.data.options)
    torch.manual_seed(seed)
    model = build_model(cfg.model, spec)
    randomize_zero_init(model, seed)
    model = model.to(device)
    n = batch_size or cfg.train.batch_size
    x = materialize(dataset, limit=min(n, len(dataset)), seed=seed)
    if x.shape[0] < n:  # a batch larger than the split: repeat it
        x = x.repeat((math.ceil(n / x.shape[0]),) + (1,) * (x.ndim - 1))[:n]
    cond = None
    if model.num_labels:
        gen = torch.Generator().manual_seed(seed)
        cond = torch.randint(0, int(model.num_labels), (n,), generator=gen).to(device)
    return Bench(preset=preset, cfg=cfg, model=model, x=x.to(device), cond=cond, spec=spec)


def autocast(device: torch.device, bf16: bool) -> contextlib.AbstractContextManager[Any]:
    """torch.autocast(bfloat16) on the device when `bf16`, else nothing (what Accelerate's autocast does)."""
    if not bf16:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def train_step(bench: Bench, *, bf16: bool = False, optimizer: dict[str, Any] | None = None,
               ema: bool = True) -> Callable[[], None]:
    """One optimisation step exactly as `bfn.training.trainer.train` takes it (`bfn.training.trainer.train_step`),
    minus data loading and logging: forward under autocast, loss per dimension, the finite check, backward,
    gradient clipping, AdamW, the LR scheduler and the EMA update. `optimizer` adds keyword arguments to AdamW
    (e.g. foreach=True)."""
    from bfn.training.ema import ema_model
    from bfn.training.trainer import train_step as trainer_step

    tc = bench.cfg.train
    model, x, cond = bench.model, bench.x, bench.cond
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=tc.lr, betas=tuple(tc.betas), weight_decay=tc.weight_decay,
                            **(optimizer or {}))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0)
    averaged = ema_model(model, tc.ema_decay).to(x.device) if ema else None

    def step() -> None:
        out = trainer_step(model, x, cond, opt, grad_clip=tc.grad_clip, autocast=lambda: autocast(x.device, bf16),
                           scheduler=sched, ema=averaged)
        if not out.finite:
            raise RuntimeError(f"{bench.preset}: non-finite loss in the benchmark")

    return step


def loss_backward(bench: Bench, *, bf16: bool = False) -> Callable[[], None]:
    """Forward and backward only (what FLOPs are counted on); gradients are dropped afterwards."""
    model, x, cond = bench.model, bench.x, bench.cond

    def fn() -> None:
        with autocast(x.device, bf16):
            per_example = model(x, cond=cond)
        (per_example.mean() / x[0].numel()).backward()
        model.zero_grad(set_to_none=True)

    return fn


def forward_only(bench: Bench, *, bf16: bool = False) -> Callable[[], None]:
    """The training forward pass (the loss) without gradients."""
    model, x, cond = bench.model, bench.x, bench.cond

    def fn() -> None:
        with torch.no_grad(), autocast(x.device, bf16):
            model(x, cond=cond)

    return fn


def network_dtype(bench: Bench, *, bf16: bool) -> str:
    """The dtype the network's output actually has in a training forward pass under the benchmark's autocast
    setting (the models may switch autocast off around their network)."""
    seen: list[str] = []
    net = bench.model.network
    handle = net.register_forward_hook(lambda mod, args, out: seen.append(str(out.dtype).removeprefix("torch.")))
    try:
        forward_only(bench, bf16=bf16)()
    finally:
        handle.remove()
    return seen[0] if seen else "unknown"


# --- output -----------------------------------------------------------------------------------------------------
def write_json(out: str | Path, name: str, data: dict[str, Any]) -> Path:
    """Write results to OUT/NAME.json atomically (through a temp file) and return the path."""
    from bfn.utils.io import atomic_write_text

    path = Path(out) / f"{name}.json"
    atomic_write_text(path, json.dumps(data, indent=1, default=str) + "\n")
    return path


def table(headers: list[str], rows: list[list[Any]], align: str | None = None) -> str:
    """A Markdown table; `align` is one character per column, "l" or "r" (default: first left, rest right)."""
    align = align or "l" + "r" * (len(headers) - 1)
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join(" --- " if a == "l" else " ---: " for a in align) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def fmt(value: float | None, digits: int = 1) -> str:
    """A number for a table: fixed digits, thousands separators, "" for missing values."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return ""
    return f"{value:,.{digits}f}"


def env_line(env: dict[str, Any]) -> str:
    """One line describing the machine, for the top of a Markdown summary."""
    ac = f", autocast {env['autocast']}" if env.get("autocast") else ""
    load = env.get("load_average_1min")
    load_s = f", load {load:.2f} at start" if load is not None else ""
    return (f"torch {env['torch']}, {env['device_name']} ({env['device']}), {env['threads']} thread(s){ac}"
            f"{load_s}, {env['timestamp']}")
