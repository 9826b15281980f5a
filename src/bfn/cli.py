"""The `bfn` command: parse, load configs, call the Python API. Every subcommand is a few API calls."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from bfn.commands import HelpFormatter
from bfn.errors import BFNError, ConfigError

EPILOG = """examples:
  bfn train digits.npz                      # your own array: the layout, data type and model are chosen for it
  bfn train mixture-1d                      # 1-D Gaussian mixture demo, under a minute on a laptop CPU
  bfn train mnist-discrete train.steps=500  # binarized MNIST; any config key can be overridden
  bfn train runs/mnist-discrete --resume    # continue a stopped run
  bfn sample runs/mnist-discrete --n 64 --steps 100
  bfn sample runs/mnist-discrete-cond --label 7 --guidance 2
  bfn data list
"""


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--debug", action="store_true", help="show the full traceback on errors")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bfn", description="Bayesian Flow Networks: train, sample, evaluate.",
                                     epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_common(parser)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("train", help="train a model on your .npy/.npz/.csv file or image folder, or from a preset, "
                                     "a YAML file or a run directory", formatter_class=HelpFormatter)
    p.add_argument("config", help="your data (.npy/.npz/.csv file or folder of PNG images: the model is chosen for "
                                  "it), a preset name (see `bfn presets`), a .yaml file, or a run directory to resume")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. train.steps=500")
    p.add_argument("--out", default=None, help="run directory (default: runs/<preset name>)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="training device")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the network (= train.compile=true): minutes of compilation, then faster steps")
    _add_common(p)

    p = sub.add_parser("presets", help="list the shipped presets, or print one's YAML (`bfn presets NAME`)")
    p.add_argument("name", nargs="?", default=None, help="a preset to print as YAML (default: list them all)")
    _add_common(p)
    p = sub.add_parser("samplers", help="list the available samplers")
    _add_common(p)

    p = sub.add_parser("data", help="datasets: `bfn data list` shows what exists and what is available offline")
    p.add_argument("action", choices=["list"], help="what to do")
    _add_common(p)
    for module in _command_modules():
        module.register(sub)
    return parser


def _command_modules() -> list[Any]:
    """Subcommands that live in bfn.commands: each module has `register(subparsers)`, which adds its parser with
    `set_defaults(func=...)`; `func(args) -> int`."""
    import importlib

    out = []
    for name in COMMAND_MODULES:
        out.append(importlib.import_module(f"bfn.commands.{name}"))
    return out


#: modules under bfn/commands/ (kept explicit: no discovery by file name)
COMMAND_MODULES: list[str] = ["sample", "show", "eval", "compare", "import_", "distill"]


def cmd_train(args: argparse.Namespace) -> int:
    from bfn.config import load_config
    from bfn.training import train

    if args.compile:
        args.overrides = [*args.overrides, "train.compile=true"]
    from bfn.commands.owndata import is_own_data, own_data_config

    source = Path(args.config)
    if is_own_data(args.config):
        cfg, line = own_data_config(args.config, args.overrides)
        print(line)
        out = Path(args.out) if args.out else Path("runs") / cfg.name
    elif source.is_dir():
        if not (source / "config.yaml").is_file():
            raise ConfigError(f"{source} is a directory without config.yaml; give a preset name or a run directory")
        cfg = load_config(str(source / "config.yaml"), args.overrides)
        out = Path(args.out) if args.out else source
    else:
        cfg = load_config(args.config, args.overrides)
        out = Path(args.out) if args.out else Path("runs") / cfg.name
    if cfg.data.name == "array" and not is_own_data(args.config):
        from bfn.commands.owndata import resolve_array_config

        cfg, line = resolve_array_config(cfg)
        print(line)
    result = train(cfg, out, resume=args.resume, device=args.device, progress=not args.no_progress)
    if result.steps_done == 0 and not result.interrupted:
        print(f"{out} already finished all {result.step} steps (last logged loss {result.final_loss:.3f}); nothing to "
              f"train. Raise train.steps to continue it, e.g. bfn train {out} --resume train.steps={2 * result.step}")
    else:
        print(f"trained {result.steps_done} steps (to step {result.step}) in {result.wall_seconds:.1f} s "
              f"({result.images_per_second:.0f} examples/s), final loss {result.final_loss:.3f} per example; "
              f"run directory: {out}")
    if result.interrupted:
        return 0
    from bfn.evaluation.report import post_train_report
    from bfn.utils.runtime import resolve_device

    report = post_train_report(out, device=resolve_device(args.device if args.device != "auto" else "auto"))
    for key, value in report.items():
        print(f"{key}: {value}")
    return 0


def cmd_presets(args: argparse.Namespace) -> int:
    from bfn.config import list_presets, load_config, preset_yaml

    if args.name is not None:
        print(preset_yaml(args.name), end="")
        return 0
    for name in list_presets():
        print(f"{name:28s} {load_config(name).description}")
    return 0


def cmd_samplers(args: argparse.Namespace) -> int:
    from bfn.samplers import SAMPLERS

    for name, fn in SAMPLERS.items():
        print(f"{name:16s} {(fn.__doc__ or '').strip().splitlines()[0]}")
    return 0


def cmd_data(args: argparse.Namespace) -> int:
    from bfn.data import list_datasets

    for entry in list_datasets():
        spec = entry.spec
        status = "available offline" if entry.offline() else "needs download"
        print(f"{spec.name:24s} {spec.kind:12s} {str(tuple(spec.shape)):14s} {status:18s} {entry.description}")
    return 0


COMMANDS: dict[str, Any] = {"train": cmd_train, "presets": cmd_presets,
                            "samplers": cmd_samplers, "data": cmd_data}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        # overrides may follow options (`bfn train PRESET --out DIR a.b=1`); argparse stops collecting the
        # positional list at the first option, so the rest arrives here.
        command = getattr(args, "command", None)
        if command in ("train", "distill") and all(("=" in e or e.startswith("~")) and not e.startswith("-")
                                                   for e in extra):
            args.overrides = [*args.overrides, *extra]
        else:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if args.command is None:
        parser.print_help()
        return 2
    func = getattr(args, "func", None) or COMMANDS[args.command]
    try:
        return func(args)
    except BFNError as err:
        if args.debug:
            raise
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
