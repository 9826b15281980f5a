"""bfn against the official BFN code on the official MNIST network: training and sampling images/s side by side.

    python -m benchmarks.official_speed [--official /work/official] [--threads 2] [--rounds 7]
    python -m benchmarks.official_speed --quick          # smoke run (batch 2, 2 steps): the numbers mean nothing

The official code (nnaisense/bayesian-flow-networks, a local clone: `--official` or $BFN_OFFICIAL) builds its
MNIST BFN from its own `configs/mnist_discrete.yaml` with its own `make_bfn`; bfn builds the `mnist-discrete-paper`
preset with the official-compatible network `official-mnist-unet` when bfn has it (else with the preset's own U-Net,
and then the weights and numbers cannot be identical: the JSON says which). The official weights (seed 0, its
zero-initialised output convolution given small random values) are loaded into both, so both compute the same
function. Each side runs in its own worker process, set up as its own code sets itself up (bfn's worker calls what
`bfn train` calls on CPU, e.g. `bfn.training.allocator.keep_freed_memory`), with the same torch thread count; the
coordinator times them in interleaved rounds (every round times each side once, in alternating order, one side at a
time), so drifting load hits both alike.

Measured, per side:
- training at batch `--batch-size` (32): one optimisation step as each trains: the official `train.py` step
  (loss, backward, clip 5, AdamW lr 1e-4 betas (0.9, 0.98) weight decay 0.01 (AdamW's default, which the official
  config keeps), EMA 0.9999 by its `update_ema`) and bfn's trainer step (`benchmarks.common.train_step` with the
  same optimiser settings). The same batch of binarized MNIST digits on both sides;
- sampling `--sample-n` (16) images at each of `--sample-steps` (10, 100), in eval mode on both sides (the
  official `sample.py` never calls eval() and so samples with dropout on; that would only be slower);
- images/s from the median wall time per call, and from the median process CPU time per call (user + system of all
  threads: on a loaded, shared machine this is the steadier figure); achieved GFLOP/s (FlopCounterMode FLOPs over
  wall time) and its share of a measured convolution ceiling: torch's own 3x3 convolution at the shape carrying
  most of the network's convolution FLOPs (forward + backward at the training batch; forward at the sampling batch);
- minor page faults per training step;
- the same numbers out: with the same seed, both sides' losses over the first `--check-steps` optimisation steps
  (the flow's noise, the time draws and the dropout masks come from the same global RNG stream in the same order)
  and their largest relative difference.

Writes benchmarks/results/official_speed.json (or under --out) and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import resource
import sys
import tempfile
import time
import types
from pathlib import Path
from typing import Any

import torch

from benchmarks import common

OFFICIAL_CONFIG = "configs/mnist_discrete.yaml"
PRESET = "mnist-discrete-paper"
OFFICIAL_NETWORK = "official-mnist-unet"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.official_speed", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--official", default=os.environ.get("BFN_OFFICIAL", "/work/official"),
                   help="path of a clone of nnaisense/bayesian-flow-networks")
    p.add_argument("--threads", type=int, default=2, help="torch intra-op threads on both sides")
    p.add_argument("--rounds", type=int, default=7, help="interleaved timed rounds (medians are reported)")
    p.add_argument("--batch-size", type=int, default=32, help="training batch")
    p.add_argument("--sample-n", type=int, default=16, help="images per sampling call")
    p.add_argument("--sample-steps", default="10,100", help="sampling step counts, comma separated")
    p.add_argument("--check-steps", type=int, default=3, help="optimisation steps whose losses are compared")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="smoke run: batch 2, 2 images at 2 steps, 1 round")
    p.add_argument("--out", default=str(common.RESULTS), help="directory for official_speed.json")
    return p.parse_args(argv)


# --- the official code --------------------------------------------------------------------------------------
def import_official(path: str | Path) -> types.ModuleType:
    """The official `utils_train` module. Its `data.py` imports torchvision (whose package-index wheel does not
    import against a CPU torch build) and requests at the top, for data sets this benchmark never loads, and
    `utils_train.py` imports rich for its progress bar: when those imports fail, stand-in modules take their
    place (nothing of them is called)."""
    path = str(Path(path).resolve())
    if not Path(path, "utils_train.py").is_file():
        raise SystemExit(f"{path} is not a clone of the official BFN code (no utils_train.py); pass --official")
    if path not in sys.path:
        sys.path.insert(0, path)
    try:
        import torchvision  # noqa: F401
        import torchvision.transforms  # noqa: F401
    except Exception:  # ImportError, or RuntimeError "operator torchvision::nms does not exist"
        for name in [n for n in sys.modules if n == "torchvision" or n.startswith("torchvision.")]:
            del sys.modules[name]
        tv = types.ModuleType("torchvision")
        tv.transforms = types.ModuleType("torchvision.transforms")
        tv.transforms.Lambda = type("Lambda", (), {})
        tv.transforms.Compose = type("Compose", (), {})
        tv.datasets = types.ModuleType("torchvision.datasets")
        tv.datasets.CIFAR10 = type("CIFAR10", (), {})
        tv.datasets.MNIST = type("MNIST", (), {})
        tv.utils = types.ModuleType("torchvision.utils")
        tv.utils.make_grid = None
        sys.modules.update({"torchvision": tv, "torchvision.transforms": tv.transforms,
                            "torchvision.datasets": tv.datasets, "torchvision.utils": tv.utils})
    try:
        import requests  # noqa: F401
    except ImportError:
        sys.modules["requests"] = types.ModuleType("requests")
    import accelerate.logging  # noqa: F401  (before any stand-in for rich: accelerate probes for it)

    try:
        import rich.progress  # noqa: F401
    except ImportError:  # the training script's progress bar only
        rich = types.ModuleType("rich")
        rich.progress = types.ModuleType("rich.progress")
        for name in ("Progress", "SpinnerColumn", "MofNCompleteColumn", "TimeElapsedColumn", "TextColumn"):
            setattr(rich.progress, name, type(name, (), {}))
        sys.modules.update({"rich": rich, "rich.progress": rich.progress})
    import utils_train

    return utils_train


def official_bfn(path: str | Path) -> torch.nn.Module:
    from omegaconf import OmegaConf

    utils_train = import_official(path)
    cfg = OmegaConf.load(Path(path) / OFFICIAL_CONFIG)
    return utils_train.make_bfn(cfg.model)


def official_weights(path: str | Path, seed: int) -> dict[str, torch.Tensor]:
    """The official MNIST BFN's state dict at `seed`, its zero-initialised layers given small random values (so
    that the output depends on the input, as a trained network's does)."""
    torch.manual_seed(seed)
    bfn = official_bfn(path)
    common.randomize_zero_init(bfn, seed)
    return {k: v.detach().clone() for k, v in bfn.state_dict().items()}


# --- the workers --------------------------------------------------------------------------------------------
def data_batch(n: int, seed: int) -> torch.Tensor:
    """n binarized MNIST digits [n, 1, 28, 28] (long), the same on both sides."""
    from bfn.data import load_dataset
    from bfn.evaluation.nll import materialize

    dataset, _ = load_dataset("mnist-binarized", "train")
    return materialize(dataset, limit=n, seed=seed).long()


class OfficialSide:
    """The official BFN as its train.py trains it and its sample.py samples (in eval mode)."""

    name = "official"

    def __init__(self, path: str, weights: dict[str, torch.Tensor], x: torch.Tensor, seed: int) -> None:
        import copy

        self.utils_train = import_official(path)
        torch.manual_seed(seed)
        self.model = official_bfn(path)
        self.model.load_state_dict(weights)
        self.x = x.permute(0, 2, 3, 1).contiguous()  # the official layout [B, H, W, C]
        self.shape = tuple(self.x.shape[1:])
        self.network = self.model.net
        self.ema = copy.deepcopy(self.model)
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=1e-4, betas=(0.9, 0.98))

    def step(self) -> float:
        self.model.train()
        loss = self.model(self.x)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 5.0)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        self.utils_train.update_ema(self.ema, self.model, 0.9999)
        return float(loss.detach())

    def loss_backward(self) -> None:
        self.model(self.x).backward()
        self.model.zero_grad(set_to_none=True)

    def sample(self, n: int, steps: int) -> Any:
        self.model.eval()
        return self.model.sample((n, *self.shape), steps)


class BfnSide:
    """bfn's model as `bfn train` trains it (the trainer's step, its CPU set-up) and `bfn sample` samples."""

    name = "bfn"

    def __init__(self, path: str, weights: dict[str, torch.Tensor], x: torch.Tensor, seed: int) -> None:
        from bfn.config import load_config
        from bfn.data import load_dataset
        from bfn.models.hub import build_model
        from bfn.networks.registry import NETWORKS
        from bfn.training.allocator import keep_freed_memory

        keep_freed_memory()  # what bfn train does on CPU
        cfg = load_config(PRESET)
        self.identical = OFFICIAL_NETWORK in NETWORKS
        if self.identical:
            cfg.model.network.name = OFFICIAL_NETWORK
            cfg.model.network.kwargs = {}
        cfg.train.weight_decay = 0.01  # AdamW's default, which the official config keeps
        cfg.train.ema_decay = 0.9999
        cfg.train.grad_clip = 5.0
        cfg.train.lr = 1e-4
        cfg.train.betas = [0.9, 0.98]
        # the preset trains on full MNIST, which may not be on this machine; the embedded digits have the same
        # spec (1 x 28 x 28, K = 2) and the batch itself comes from `data_batch`
        spec = load_dataset("mnist-binarized", "test")[1]
        torch.manual_seed(seed)
        model = build_model(cfg.model, spec)
        if self.identical:
            own = model.network.state_dict()  # the official input adapter's unused position table is dropped
            net_weights = {k.removeprefix("net."): v for k, v in weights.items() if k.removeprefix("net.") in own}
            model.network.load_state_dict(net_weights)
        else:
            common.randomize_zero_init(model, seed)
        self.bench = common.Bench(preset=PRESET, cfg=cfg, model=model, x=x, cond=None, spec=spec)
        self.model = model
        self.network = model.network
        self.train_step = common.train_step(self.bench)
        self.last_loss = float("nan")
        self._hook = model.register_forward_hook(self._remember)

    def _remember(self, module: Any, args: Any, out: torch.Tensor) -> None:
        if out.requires_grad:
            self.last_loss = float(out.detach().mean() / self.bench.x[0].numel())

    def step(self) -> float:
        self.model.train()
        self.train_step()
        return self.last_loss

    def loss_backward(self) -> None:
        common.loss_backward(self.bench)()

    def sample(self, n: int, steps: int) -> Any:
        self.model.eval()
        return self.model.sample(n, steps, sampler="paper")


def worker(side: str, conn: Any, path: str, weights_file: str, n: int, seed: int, threads: int) -> None:
    """Serve ("train", iters) / ("sample", n, steps) / ("losses", k) / ("flops", ...) requests over `conn`."""
    torch.set_num_threads(threads)
    weights = torch.load(weights_file, weights_only=True)
    x = data_batch(n, seed)
    obj = (OfficialSide if side == "official" else BfnSide)(path, weights, x, seed)
    conn.send({"ready": True, "identical_weights": getattr(obj, "identical", True),
               "parameters": sum(p.numel() for p in obj.network.parameters())})
    while True:
        msg = conn.recv()
        if msg[0] == "stop":
            return
        if msg[0] == "losses":
            torch.manual_seed(msg[1])
            conn.send([obj.step() for _ in range(msg[2])])
        elif msg[0] == "flops":
            fwd_bwd = common.count_flops(obj.loss_backward)
            sample = common.count_flops(lambda n=msg[1]: obj.sample(n, 1))  # 1 step + the final evaluation
            conn.send({"train_per_image": fwd_bwd / n, "sample_per_image_per_evaluation": sample / 2 / msg[1]})
        else:
            fn = obj.step if msg[0] == "train" else (lambda n=msg[1], s=msg[2]: obj.sample(n, s))
            ru0, c0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.process_time(), time.perf_counter()
            fn()
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
            faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - ru0.ru_minflt
            conn.send({"wall": wall, "cpu": cpu, "minor_faults": faults})


class Worker:
    def __init__(self, side: str, args: argparse.Namespace, weights_file: str, n: int) -> None:
        ctx = mp.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=worker, args=(side, child, args.official, weights_file, n, args.seed,
                                                     args.threads), daemon=True)
        self.proc.start()
        self.info = self.ask(None)

    def ask(self, msg: tuple[Any, ...] | None) -> Any:
        if msg is not None:
            self.conn.send(msg)
        if not self.conn.poll(3600):
            raise SystemExit("a benchmark worker did not answer within an hour")
        return self.conn.recv()

    def close(self) -> None:
        self.conn.send(("stop",))
        self.proc.join(30)


# --- the coordinator ----------------------------------------------------------------------------------------
def rounds(workers: dict[str, Worker], msg: tuple[Any, ...], repeats: int, warmup: int) -> dict[str, list[dict]]:
    """Interleaved timing: every round asks each side once, the order alternating between rounds."""
    names = list(workers)
    for name in names:
        for _ in range(warmup):
            workers[name].ask(msg)
    out: dict[str, list[dict]] = {name: [] for name in names}
    for r in range(repeats):
        for name in names[r % 2:] + names[:r % 2]:
            out[name].append(workers[name].ask(msg))
    return out


def summarise(times: list[dict], images: int, flops_per_image: float, ceiling: float) -> dict[str, Any]:
    wall = common.median([t["wall"] for t in times])
    cpu = common.median([t["cpu"] for t in times])
    gflops = flops_per_image * images / wall / 1e9
    return {"seconds_wall": [t["wall"] for t in times], "seconds_cpu": [t["cpu"] for t in times],
            "seconds_wall_median": wall, "seconds_cpu_median": cpu, "spread": common.spread([t["wall"] for t in times]),
            "images_per_s": images / wall, "images_per_cpu_s": images / cpu, "achieved_gflops": gflops,
            "fraction_of_conv_peak": gflops / ceiling,
            "minor_faults_median": common.median([float(t["minor_faults"]) for t in times])}


def run(args: argparse.Namespace) -> dict[str, Any]:
    torch.set_num_threads(args.threads)
    if args.quick:
        args.batch_size, args.sample_n, args.sample_steps, args.rounds, args.check_steps = 2, 2, "2", 1, 2
    steps_list = [int(s) for s in args.sample_steps.split(",") if s.strip()]
    env = common.environment(torch.device("cpu"))
    weights = official_weights(args.official, args.seed)
    # the convolution ceilings, measured here at the official network's own shapes
    off = official_bfn(args.official)
    off.load_state_dict(weights)
    x_off = data_batch(args.batch_size, args.seed).permute(0, 2, 3, 1).contiguous()
    train_peak = common.network_conv_peak(off.net, lambda: off(x_off), torch.device("cpu"), backward=True,
                                          repeats=3 if args.quick else 7)
    off.eval()
    sample_peak = common.network_conv_peak(off.net, lambda: off.sample((args.sample_n, 28, 28, 1), 1),
                                           torch.device("cpu"), backward=False, repeats=3 if args.quick else 7)
    with tempfile.TemporaryDirectory() as tmp:
        weights_file = str(Path(tmp) / "official_weights.pt")
        torch.save(weights, weights_file)
        workers = {side: Worker(side, args, weights_file, args.batch_size) for side in ("official", "bfn")}
    try:
        losses = {name: w.ask(("losses", args.seed, args.check_steps)) for name, w in workers.items()}
        flops = {name: w.ask(("flops", args.sample_n)) for name, w in workers.items()}
        train = rounds(workers, ("train",), args.rounds, warmup=1)
        sample = {steps: rounds(workers, ("sample", args.sample_n, steps), args.rounds, warmup=1 if steps <= 10 else 0)
                  for steps in steps_list}
    finally:
        for w in workers.values():
            w.close()
    rel = max(abs(a - b) / max(abs(a), 1e-12) for a, b in zip(losses["official"], losses["bfn"], strict=True))
    rows: dict[str, Any] = {}
    for name in workers:
        rows[name] = {"parameters": workers[name].info["parameters"], "flops": flops[name],
                      "train": summarise(train[name], args.batch_size, flops[name]["train_per_image"],
                                         train_peak["gflops_median"]),
                      "sample": {str(s): summarise(sample[s][name], args.sample_n,
                                                   flops[name]["sample_per_image_per_evaluation"] * (s + 1),
                                                   sample_peak["gflops_median"]) for s in steps_list}}
    ratios = {"train_wall": rows["bfn"]["train"]["images_per_s"] / rows["official"]["train"]["images_per_s"],
              "train_cpu": rows["bfn"]["train"]["images_per_cpu_s"] / rows["official"]["train"]["images_per_cpu_s"]}
    for s in steps_list:
        b, o = rows["bfn"]["sample"][str(s)], rows["official"]["sample"][str(s)]
        ratios[f"sample_{s}_wall"] = b["images_per_s"] / o["images_per_s"]
        ratios[f"sample_{s}_cpu"] = b["images_per_cpu_s"] / o["images_per_cpu_s"]
    return {"benchmark": "official_speed", "quick": args.quick, "environment": env, "official": args.official,
            "bfn_network": OFFICIAL_NETWORK if workers["bfn"].info["identical_weights"] else f"{PRESET} (own U-Net)",
            "identical_weights": workers["bfn"].info["identical_weights"], "threads": args.threads,
            "rounds": args.rounds, "batch_size": args.batch_size, "sample_n": args.sample_n,
            "losses": losses, "loss_max_relative_difference": rel,
            "conv_peak_train": train_peak, "conv_peak_sample": sample_peak, "sides": rows, "ratios": ratios}


def markdown(result: dict[str, Any]) -> str:
    o, b, r = result["sides"]["official"], result["sides"]["bfn"], result["ratios"]
    headers = ["task", "official img/s", "bfn img/s", "ratio (wall)", "ratio (CPU time)", "official GFLOP/s",
               "bfn GFLOP/s", "official % of conv peak", "bfn % of conv peak"]

    def row(task: str, oc: dict, bc: dict, key: str) -> list[Any]:
        return [task, common.fmt(oc["images_per_s"], 2), common.fmt(bc["images_per_s"], 2),
                f"{r[key + '_wall']:.2f}x", f"{r[key + '_cpu']:.2f}x", common.fmt(oc["achieved_gflops"]),
                common.fmt(bc["achieved_gflops"]), f"{100 * oc['fraction_of_conv_peak']:.0f}%",
                f"{100 * bc['fraction_of_conv_peak']:.0f}%"]

    rows = [row(f"train, batch {result['batch_size']}", o["train"], b["train"], "train")]
    for s in o["sample"]:
        rows.append(row(f"sample {result['sample_n']}, {s} steps", o["sample"][s], b["sample"][s], f"sample_{s}"))
    tp, sp = result["conv_peak_train"], result["conv_peak_sample"]
    weights = ("identical weights (official-mnist-unet)" if result["identical_weights"] else
               "NOT identical: bfn has no official-mnist-unet yet, so bfn runs its mnist-discrete-paper U-Net")
    mode = " (--quick smoke run: not a measurement)" if result["quick"] else ""
    return "\n".join([
        f"### bfn vs the official BFN code, MNIST network{mode} ({common.env_line(result['environment'])})", "",
        common.table(headers, rows), "",
        f"{result['threads']} thread(s) per side, {result['rounds']} interleaved rounds, medians; {weights}. "
        f"Parameters: official {o['parameters']:,}, bfn {b['parameters']:,}. Training FLOPs per image: official "
        f"{o['flops']['train_per_image'] / 1e9:.1f} G, bfn {b['flops']['train_per_image'] / 1e9:.1f} G. "
        f"Minor page faults per training step: official {o['train']['minor_faults_median']:.0f}, bfn "
        f"{b['train']['minor_faults_median']:.0f}.",
        f"Conv peak (torch's 3x3 convolution at the official network's dominant shape): training "
        f"{tp['c_in']}->{tp['c_out']} ch at {tp['height']}x{tp['width']}, batch {tp['batch']}, forward + backward: "
        f"{tp['gflops_median']:.1f} GFLOP/s; sampling {sp['c_in']}->{sp['c_out']} at batch {sp['batch']}, forward: "
        f"{sp['gflops_median']:.1f} GFLOP/s.",
        f"Same seed, losses of the first {len(result['losses']['bfn'])} steps: official "
        f"{', '.join(f'{v:.6f}' for v in result['losses']['official'])}; bfn "
        f"{', '.join(f'{v:.6f}' for v in result['losses']['bfn'])} (largest relative difference "
        f"{result['loss_max_relative_difference']:.2e})."])


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    result = run(args)
    path = common.write_json(args.out, "official_speed", result)
    print(markdown(result))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
