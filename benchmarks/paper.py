"""The paper's models on a GPU: training-step time of each paper recipe, paper-protocol likelihoods and a sampler
table of imported (or trained) runs, with wall times; says what it skipped and why.

    python -m benchmarks.paper --device cuda --runs mnist=runs/mnist-official,cifar10=runs/cifar10-official,\
text8=runs/text8-official [--repeats 10] [--steps 10,20,50,100,1000] [--samples 10000]
    python -m benchmarks.paper --dry-run          # CPU, seconds: tiny networks and synthetic data, every code path

Sections (each skipped, with the reason, when it cannot run):
- train: one optimisation step of each paper preset at full size (`--train-batch`, default the preset's batch;
  synthetic data of the dataset's kind, no download), median of `--train-repeats` after one warm-up;
- nll: `bfn eval --protocol paper` for each run on its test split (`--repeats` R, `--limit`): MNIST L^784 + L^r
  in nats/image, CIFAR-10 L^10 + L^r in bits/dim, text8 L^inf + L^r in bits/char;
- samplers: for each run and sampler (`--samplers`, default paper and sde2) and each step count, `--samples`
  draws with their wall time; CIFAR-10: FID against the test split with torchmetrics' Inception FID (needs
  `pip install torchmetrics[image]` and the Inception weights, which torch-fidelity downloads once); text8: the
  share of generated words (between spaces, inner words only) found among the training split's words.

Runs come from `bfn import` (official checkpoints) or `bfn train`; the data from bfn's dataset readers
($BFN_DATA_DIR). Writes OUT/paper.json and prints a Markdown summary.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks import common

PRESETS = ("mnist-discrete-paper", "cifar10-discretized-256", "cifar10-discretized-16", "cifar10-continuous-256",
           "cifar10-continuous-16", "text8-discrete")
#: --dry-run network sizes
TINY = {"official-mnist-unet": {"model_channels": 32, "channel_mult": [1, 2], "num_res_blocks": 1,
                                "unet_out_channels": 32},
        "official-cifar-unet": {"embedding_dim": 32, "n_blocks": 1},
        "official-text8-gpt": {"n_layer": 1, "n_embd": 48}}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.paper", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    common.add_common_args(p)
    p.add_argument("--runs", default="", help="NAME=RUN_DIR,... (names mnist, cifar10, text8: which protocol)")
    p.add_argument("--only", default="train,nll,samplers", help="sections to run")
    p.add_argument("--presets", default=",".join(PRESETS), help="train section: presets to time")
    p.add_argument("--train-batch", type=int, default=0, help="train section: batch (0: the preset's)")
    p.add_argument("--train-repeats", type=int, default=3, help="train section: timed steps (median reported)")
    p.add_argument("--repeats", type=int, default=1, help="nll section: Monte Carlo repeats per test example")
    p.add_argument("--limit", type=int, default=None, help="nll section: first N test examples only")
    p.add_argument("--batch-size", type=int, default=250, help="examples per forward pass / sampling batch")
    p.add_argument("--steps", default="10,20,50,100,1000", help="samplers section: step counts")
    p.add_argument("--samplers", default="paper,sde2", help="samplers section: sampler names")
    p.add_argument("--samples", type=int, default=10_000, help="samplers section: draws per cell")
    p.add_argument("--dry-run", action="store_true", help="CPU smoke run: tiny networks, synthetic data")
    return p.parse_args(argv)


# --- synthetic data and models ---------------------------------------------------------------------------------
def synthetic_batch(spec: Any, n: int, gen: torch.Generator) -> torch.Tensor:
    """n random examples of a dataset's kind and shape (classes, or values on bin centres)."""
    shape = (n, *spec.shape)
    if spec.kind == "discrete":
        return torch.randint(0, spec.num_classes, shape, generator=gen)
    k = spec.num_bins
    return (2 * torch.randint(0, k, shape, generator=gen).float() + 1) / k - 1


def preset_model(preset: str, tiny: bool, seed: int) -> tuple[Any, Any, Any]:
    """(config, data spec, model with random weights) of a preset, without reading its data."""
    from dataclasses import replace

    from bfn.config import load_config
    from bfn.data.registry import REGISTRY
    from bfn.models.hub import build_model

    cfg = load_config(preset)
    if tiny:
        cfg.model.network.kwargs = {**cfg.model.network.kwargs, **TINY[cfg.model.network.name]}
    spec = REGISTRY[cfg.data.name].spec
    if "bins" in cfg.data.options:
        spec = replace(spec, num_bins=cfg.data.options["bins"])
    if tiny and spec.name == "text8":
        spec = replace(spec, shape=(32,))
    torch.manual_seed(seed)
    model = build_model(cfg.model, spec)
    common.randomize_zero_init(model, seed)
    return cfg, spec, model


# --- sections --------------------------------------------------------------------------------------------------
def train_section(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    rows = {}
    for preset in [p for p in args.presets.split(",") if p]:
        cfg, spec, model = preset_model(preset, args.dry_run, args.seed)
        n = 2 if args.dry_run else (args.train_batch or cfg.train.batch_size)
        x = synthetic_batch(spec, n, torch.Generator().manual_seed(args.seed)).to(device)
        bench = common.Bench(preset=preset, cfg=cfg, model=model.to(device), x=x, cond=None, spec=spec)
        times = common.measure(common.train_step(bench, bf16=args.bf16), device, warmup=1,
                               repeats=1 if args.dry_run else args.train_repeats)
        rows[preset] = {"network": cfg.model.network.name, "parameters": bench.parameters, "batch": n,
                        "seconds_per_step": common.median(times), "examples_per_s": n / common.median(times),
                        "spread": common.spread(times)}
        print(f"train {preset}: {rows[preset]['seconds_per_step']:.3f} s/step at batch {n}", flush=True)
        del bench, model
        common.release_memory()
    return rows


def load_runs(args: argparse.Namespace, device: torch.device) -> dict[str, tuple[Any, Any, Any]]:
    """name -> (config, model, test data or a reason string)."""
    from bfn.config import load_config
    from bfn.data import load_dataset
    from bfn.errors import BFNError
    from bfn.models import from_pretrained

    runs: dict[str, tuple[Any, Any, Any]] = {}
    if args.dry_run:
        for name, preset in (("mnist", "mnist-discrete-paper"), ("cifar10", "cifar10-discretized-256"),
                             ("text8", "text8-discrete")):
            cfg, spec, model = preset_model(preset, True, args.seed)
            runs[name] = (cfg, model.to(device).eval(), synthetic_batch(spec, 4, torch.Generator().manual_seed(1)))
        return runs
    for item in [r for r in args.runs.split(",") if r]:
        name, _, folder = item.partition("=")
        cfg = load_config(str(Path(folder) / "config.yaml"))
        model = from_pretrained(folder, device=device)
        try:
            test = load_dataset(cfg.data.name, "test", root=cfg.data.root, **cfg.data.options)[0]
        except BFNError as err:
            test = f"test data unavailable ({err})"
        runs[name] = (cfg, model, test)
    return runs


def nll_section(args: argparse.Namespace, runs: dict, device: torch.device, skipped: list[str]) -> dict[str, Any]:
    from bfn.evaluation.nll import evaluate_nll
    from bfn.evaluation.protocol import paper_protocol

    out = {}
    for name, (_cfg, model, test) in runs.items():
        if isinstance(test, str):
            skipped.append(f"nll {name}: {test}")
            continue
        proto = paper_protocol(model.data)
        t0 = time.perf_counter()
        res = evaluate_nll(model, test, steps=[proto.steps], repeats=args.repeats, batch_size=args.batch_size,
                           seed=args.seed, device=device, limit=2 if args.dry_run else args.limit)
        r = res["results"][str(proto.steps)]
        per_image = proto.unit == "nats/image"
        out[name] = {"bound": r["bound"], "value": r["nats"] if per_image else r["bits_per_dim"],
                     "se": r["nats_se"] if per_image else r["bits_per_dim_se"], "unit": proto.unit,
                     "paper": f"{proto.paper_value} {proto.unit}", "official_repeats": proto.repeats,
                     "n_examples": res["n_examples"], "repeats": res["repeats"],
                     "wall_seconds": time.perf_counter() - t0}
        print(f"nll {name}: {out[name]['bound']} = {out[name]['value']:.4f} {out[name]['unit']}", flush=True)
    return out


def fid_metric(device: torch.device) -> tuple[Any, str | None]:
    """torchmetrics' Inception FID, or (None, why not)."""
    try:
        from torchmetrics.image.fid import FrechetInceptionDistance

        return FrechetInceptionDistance(feature=2048, normalize=True).to(device), None
    except Exception as err:  # torch-fidelity missing, Inception weights not downloadable, ...
        return None, f"{type(err).__name__}: {str(err).strip().splitlines()[0][:150] if str(err).strip() else ''}"


def to_images(x: torch.Tensor) -> torch.Tensor:
    """[N, 3, H, W] values in [-1, 1] -> floats in [0, 1]."""
    return ((x.float() + 1) / 2).clamp(0, 1)


def words_of(ids: torch.Tensor) -> list[str]:
    """The words of a sequence of text8 classes (0 = space, 1..26 = a..z)."""
    import numpy as np

    from bfn.data.text8 import ALPHABET

    table = np.frombuffer(ALPHABET.encode(), dtype=np.uint8)
    return table[ids.numpy().astype(np.int64)].tobytes().decode().split(" ")


def spelling(samples: torch.Tensor, vocabulary: set[str]) -> float:
    """Share of the inner words (between two spaces) of generated sequences that occur in `vocabulary`."""
    words = [w for seq in samples for w in words_of(seq)[1:-1] if w]
    return sum(w in vocabulary for w in words) / len(words) if words else math.nan


def samplers_section(args: argparse.Namespace, runs: dict, device: torch.device,
                     skipped: list[str]) -> dict[str, Any]:
    steps = [2, 3] if args.dry_run else [int(s) for s in args.steps.split(",") if s]
    n = 4 if args.dry_run else args.samples
    out: dict[str, Any] = {}
    for name, (cfg, model, test) in runs.items():
        fid = vocabulary = None
        if name == "cifar10":
            if args.dry_run:
                skipped.append("samplers cifar10: FID not computed in --dry-run")
            elif isinstance(test, str):
                skipped.append(f"samplers cifar10 FID: {test}")
            else:
                fid, why = fid_metric(device)
                if fid is None:
                    skipped.append(f"samplers cifar10 FID: {why}")
                else:
                    for start in range(0, len(test), args.batch_size):
                        batch = torch.stack([test[i][0] for i in range(start, min(start + args.batch_size,
                                                                                    len(test)))])
                        fid.update(to_images(batch).to(device), real=True)
        if name == "text8":
            if isinstance(test, str):
                skipped.append(f"samplers text8 spelling: {test}")
            else:
                if args.dry_run:
                    ids = test.reshape(-1)
                else:
                    from bfn.data import load_dataset

                    ids = load_dataset(cfg.data.name, "train", root=cfg.data.root, **cfg.data.options)[0].ids
                vocabulary = set(words_of(ids))
        for sampler in args.samplers.split(","):
            for s in steps:
                gen = torch.Generator(device=device).manual_seed(args.seed)
                chunks, t0 = [], time.perf_counter()
                for start in range(0, n, args.batch_size):
                    m = min(args.batch_size, n - start)
                    chunks.append(model.sample(m, s, sampler=sampler, generator=gen).cpu())
                common.synchronize(device)
                wall = time.perf_counter() - t0
                samples = torch.cat(chunks)
                cell: dict[str, Any] = {"sampler": sampler, "steps": s, "nfe": s + 1, "samples": n,
                                        "wall_seconds": wall}
                if fid is not None:
                    fid.reset_real_features = False
                    fid.reset()
                    for start in range(0, n, args.batch_size):
                        fid.update(to_images(samples[start:start + args.batch_size]).to(device), real=False)
                    cell["fid"] = float(fid.compute())
                if vocabulary is not None:
                    cell["spelling"] = spelling(samples, vocabulary)
                out.setdefault(name, []).append(cell)
                print(f"samplers {name} {sampler} {s} steps: {wall:.1f} s"
                      + (f", FID {cell['fid']:.2f}" if "fid" in cell else "")
                      + (f", spelling {cell['spelling']:.3f}" if "spelling" in cell else ""), flush=True)
    return out


def markdown(result: dict[str, Any]) -> str:
    note = " (--dry-run: tiny networks, synthetic data; not a measurement)" if result["dry_run"] else ""
    parts = [f"## Paper models{note}", common.env_line(result["environment"])]
    if result.get("train"):
        rows = [[p, r["network"], f"{r['parameters']:,}", r["batch"], common.fmt(r["seconds_per_step"], 3),
                 common.fmt(r["examples_per_s"], 1)] for p, r in result["train"].items()]
        parts.append(common.table(["preset", "network", "parameters", "batch", "s/step", "examples/s"], rows))
    if result.get("nll"):
        rows = [[k, r["bound"], f"{r['value']:.4f}" + (f" ± {r['se']:.4f}" if r["se"] is not None else ""),
                 r["unit"], r["repeats"], common.fmt(r["wall_seconds"], 1), r["paper"]]
                for k, r in result["nll"].items()]
        parts.append(common.table(["run", "bound", "value", "unit", "repeats", "wall s", "paper"], rows))
    for name, cells in (result.get("samplers") or {}).items():
        rows = [[c["sampler"], c["steps"], c["nfe"], c["samples"], common.fmt(c["wall_seconds"], 1),
                 common.fmt(c.get("fid", math.nan), 2), common.fmt(c.get("spelling", math.nan), 3)] for c in cells]
        parts.append(f"{name}:\n\n" + common.table(["sampler", "steps", "NFE", "samples", "wall s", "FID",
                                                     "spelling"], rows))
    parts.append("Skipped: " + ("; ".join(result["skipped"]) if result["skipped"] else "nothing"))
    return "\n\n".join(parts) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.dry_run:
        args.device, args.threads = "cpu", args.threads or 1
    device = common.setup_runtime(args)
    sections = [s for s in args.only.split(",") if s]
    skipped: list[str] = []
    result: dict[str, Any] = {"environment": common.environment(device, bf16=args.bf16), "dry_run": args.dry_run,
                              "skipped": skipped}
    if "train" in sections:
        result["train"] = train_section(args, device)
    runs = load_runs(args, device) if {"nll", "samplers"} & set(sections) else {}
    if not runs and {"nll", "samplers"} & set(sections):
        skipped.append("nll and samplers: no --runs given (import the published checkpoints with `bfn import`)")
    if "nll" in sections:
        result["nll"] = nll_section(args, runs, device, skipped)
    if "samplers" in sections:
        result["samplers"] = samplers_section(args, runs, device, skipped)
    path = common.write_json(args.out, "paper", result)
    print()
    print(markdown(result))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
