"""`bfn show RUN --grid | --evolution | --gif | --trajectories | --progress | --curves | --guidance`: pictures
of a run.

Each flag writes one file (default RUN/figures/<name>) and prints its path; every figure is one call of a
`bfn.viz` function, so notebooks get the same pictures from Python.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from bfn.commands import HelpFormatter
from bfn.errors import BFNError, CheckpointError, ConfigError

#: figure name -> default file name under RUN/figures/
FIGURES: dict[str, str] = {
    "grid": "grid.png",
    "evolution": "evolution.png",
    "gif": "sampling.gif",
    "trajectories": "trajectories.png",
    "progress": "progress.png",
    "curves": "curves.png",
    "guidance": "guidance.png",
}
SAMPLING = ("grid", "evolution", "gif", "trajectories", "guidance")
HELP = {
    "grid": "a grid of samples (histogram / scatter plot for 1-D / 2-D data)",
    "evolution": "input distribution and output prediction of a few samples at --k steps (text: the most probable "
                 "characters, shaded by probability)",
    "gif": "animated GIF of the whole sampling run (a frame per step, at most --frames)",
    "trajectories": "1-D data: input-mean trajectories over the Bayesian flow density, with histograms",
    "progress": "the periodic sample grids of training (RUN/samples/) in one figure, captioned by step",
    "curves": "loss and gradient-norm curves from RUN/metrics.jsonl",
    "guidance": "class-conditional runs: rows = labels 0-9, columns = guidance scales (--scales), --n per cell",
}
EPILOG = """examples:
  bfn show runs/mnist-discrete --evolution --gif     # the sampling process, step by step
  bfn show runs/mnist-discrete --grid --probs --n 16  # output probabilities instead of sampled pixels
  bfn show runs/mixture-1d --trajectories --steps 100 # the paper's Figure 1 for a trained model
  bfn show runs/mnist-discrete --progress --curves    # training progress, no sampling needed
  bfn show runs/mnist-discrete-cond --guidance --scales 0,1,2,4
"""


def register(subparsers: Any) -> None:
    """Add the `show` subcommand."""
    p = subparsers.add_parser(
        "show", help="pictures of a run: grids, evolution, GIF, trajectories, progress, curves", epilog=EPILOG,
        description="Pictures of a run: each figure flag writes one file (default RUN/figures/<name>) and prints its "
                    "path.", formatter_class=HelpFormatter)
    p.add_argument("run", help="run directory written by `bfn train`")
    figures = p.add_argument_group("figures (one or more)")
    for name in FIGURES:
        figures.add_argument(f"--{name}", action="store_true", help=HELP[name])
    figures.add_argument("--all", action="store_true", help="every figure that applies to this run")
    p.add_argument("--steps", type=int, default=None, help="sampling steps (default: the run's sample.steps)")
    p.add_argument("--n", type=int, default=None,
                   help="samples (default: grid 64, evolution 4, gif 16; 1000 for 1-D/2-D data)")
    p.add_argument("--k", type=int, default=10,
                   help="evolution: steps shown, evenly spaced, first and last included (default 10)")
    p.add_argument("--frames", type=int, default=100,
                   help="gif: at most this many step frames, plus the final one (default 100)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--sampler", default=None, help="sampler name (default: the run's sample.sampler)")
    p.add_argument("--scales", default="0,1,2,4", help="guidance: comma-separated guidance scales w")
    p.add_argument("--probs", action="store_true", help="grid: show output probabilities / means, not samples")
    p.add_argument("--linear", action="store_true", help="curves: linear (not log) loss axis")
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda or mps")
    p.add_argument("--out", default=None, help="output file (one figure) or folder (several; default RUN/figures)")
    p.add_argument("--debug", action="store_true", help="show the full traceback on errors")
    p.set_defaults(func=run)


def run_settings(run_dir: Path) -> dict[str, Any]:
    """Sampling defaults and the dataset name from RUN/config.yaml (fallbacks when the run has none)."""
    if not (run_dir / "config.yaml").is_file():
        return {"steps": 100, "sampler": None, "data": None}
    from bfn.config import load_config

    cfg = load_config(str(run_dir / "config.yaml"))
    return {"steps": cfg.sample.steps, "sampler": cfg.sample.sampler, "data": cfg.data.name}


def toy_data(name: str | None, n: int, seed: int) -> Any:
    """Up to n training examples of a 1-D / 2-D dataset to draw under the samples (None when unavailable)."""
    if not name:
        return None
    import torch

    try:
        from bfn.data import load_dataset

        dataset = load_dataset(name, "train")[0]
        size = len(dataset)  # type: ignore[arg-type]
        idx = torch.linspace(0, size - 1, min(n, size)).round().long().tolist()
        items = [dataset[i] for i in idx]
        return torch.stack([item[0] if isinstance(item, (tuple, list)) else item for item in items]).float()
    except (ImportError, BFNError, OSError, TypeError) as err:
        if name == "mixture-1d":
            from bfn.data.toy import mixture_1d_sample

            return mixture_1d_sample(n, generator=torch.Generator().manual_seed(seed + 1))
        print(f"note: no data drawn under the samples ({str(err).splitlines()[0] if str(err) else err!r})",
              file=sys.stderr)
        return None


def output_paths(run_dir: Path, wanted: list[str], out: str | None) -> dict[str, Path]:
    """Where each figure goes: --out itself for one figure, else --out (or RUN/figures) / default name."""
    if out is not None and len(wanted) == 1 and Path(out).suffix:
        return {wanted[0]: Path(out)}
    folder = Path(out) if out is not None else run_dir / "figures"
    return {name: folder / FIGURES[name] for name in wanted}


def make_figure(name: str, path: Path, *, run_dir: Path, model: Any, args: argparse.Namespace,
                settings: dict[str, Any]) -> Path:
    """Draw one figure into `path`."""
    from bfn import viz
    from bfn.data.text import data_is_text

    if name == "progress":
        return viz.save_progress(run_dir, path)
    if name == "curves":
        return viz.save_training_curves(run_dir, path, log_loss=not args.linear)
    steps = args.steps or settings["steps"]
    sampler = args.sampler or settings["sampler"]
    kwargs: dict[str, Any] = {"sampler": sampler} if sampler else {}
    info = model.data
    if name in ("evolution", "gif") and data_is_text(info):
        from bfn.viz.text import save_text_evolution, save_text_gif

        if name == "evolution":
            return save_text_evolution(model, path, n=args.n, steps=steps, k=args.k, seed=args.seed, **kwargs)
        k = None if steps <= args.frames else args.frames
        return save_text_gif(model, path, n=args.n, steps=steps, k=k, seed=args.seed, **kwargs)
    data = None if info.image_like else toy_data(settings["data"], 2000, args.seed)
    if name == "grid":
        n = args.n or (64 if info.image_like else 1000)
        return viz.save_model_grid(model, path, n=n, steps=steps, seed=args.seed, probs=args.probs, data=data,
                                   **kwargs)
    if name == "guidance":
        return viz.save_guidance_grid(model, path, scales=parse_scales(args.scales), per_cell=args.n or 4,
                                      steps=steps, seed=args.seed, **kwargs)
    if name == "evolution":
        return viz.save_evolution(model, path, n=args.n, steps=steps, k=args.k, seed=args.seed, data=data, **kwargs)
    if name == "gif":
        k = None if steps <= args.frames else args.frames
        return viz.save_sampling_gif(model, path, n=args.n, steps=steps, k=k, seed=args.seed, data=data, **kwargs)
    return viz.save_flow_trajectories(model, path, data=data, n=args.n or 1000, steps=steps, seed=args.seed,
                                      **kwargs)


def parse_scales(text: str) -> list[float]:
    """"0,1,2,4" -> [0.0, 1.0, 2.0, 4.0] (a ConfigError for anything else)."""
    try:
        scales = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ConfigError(f"--scales must be comma-separated numbers like 0,1,2,4, got {text!r}") from None
    if not scales:
        raise ConfigError("--scales is empty; give comma-separated numbers like 0,1,2,4")
    return scales


def run(args: argparse.Namespace) -> int:
    run_dir = Path(args.run)
    if not run_dir.is_dir():
        raise CheckpointError(f"{run_dir} is not a directory; give a run directory written by `bfn train`")
    wanted = [name for name in FIGURES if args.all or getattr(args, name)]
    if not wanted:
        raise ConfigError("choose a figure: --grid, --evolution, --gif, --trajectories, --progress, --curves or "
                          "--guidance (or --all)")
    for flag in ("steps", "n", "k", "frames"):
        value = getattr(args, flag)
        if value is not None and value <= 0:
            raise ConfigError(f"--{flag} must be a positive integer, got {value}")
    settings = run_settings(run_dir)
    model = None
    if any(name in SAMPLING for name in wanted):
        from bfn.models import from_pretrained
        from bfn.utils.runtime import resolve_device

        model = from_pretrained(run_dir, device=resolve_device(args.device))
        if args.all and not model.num_labels:
            wanted.remove("guidance")  # --all: only the figures that apply to this run
    written = 0
    for name, path in output_paths(run_dir, wanted, args.out).items():
        try:
            print(make_figure(name, path, run_dir=run_dir, model=model, args=args, settings=settings))
            written += 1
        except BFNError as err:
            if not args.all:
                raise
            print(f"skipped --{name}: {err}", file=sys.stderr)
    return 0 if written else 2
