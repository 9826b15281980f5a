"""`bfn compare RUN_A RUN_B ...`: BFN versus diffusion (or any trained runs) side by side, as a Markdown report.

Writes DIR/report.md with, per run: parameters, training wall time and images/s, the test NLL in nats/image and
bits/dim (± one standard error), sampling time per image and sample quality at each step count; and beside it
samples.png (grids side by side), evolution.png (evolution strips over ten steps), curves.png (training curves on
one plot) and compare.json (every number). A piece that cannot be computed becomes a note, not an error.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from bfn.commands import HelpFormatter
from bfn.errors import ConfigError

EPILOG = """examples:
  bfn compare runs/mnist-discrete runs/mnist-ddpm
  bfn compare runs/mnist-discrete runs/mnist-ddpm --steps 10,100 --n 200 --limit 200   # a quick look
  bfn compare runs/mnist-discretized runs/mnist-ddpm-discretized --nll-repeats 4 --out reports/grey
"""


def register(subparsers: Any) -> None:
    """Add the `compare` subcommand."""
    p = subparsers.add_parser("compare", help="runs side by side (BFN vs DDPM): NLL, quality, speed, pictures",
                              description=__doc__.splitlines()[0], epilog=EPILOG, formatter_class=HelpFormatter)
    p.add_argument("runs", nargs="+", help="run directories written by `bfn train`")
    p.add_argument("--steps", default=None,
                   help="sampling step counts (network evaluations), comma separated (default: each model's usual "
                   "count, e.g. 100 for a BFN, T for a DDPM, one shot for a GAN)")
    p.add_argument("--n", type=int, default=200, help="samples per run and step count (500+ for steadier FIDs)")
    p.add_argument("--nll-steps", default="inf",
                   help="bounds to evaluate: 'inf' (BFN: L^inf + L^r; DDPM: its full T-step bound) and/or step counts")
    p.add_argument("--nll-repeats", type=int, default=1, help="Monte Carlo repeats per test example")
    p.add_argument("--limit", type=int, default=None, help="use only the first N test examples")
    p.add_argument("--batch-size", type=int, default=250, help="examples per forward pass and sampling batch")
    p.add_argument("--evolution-steps", type=int, default=100, help="sampling steps of the evolution strips")
    p.add_argument("--names", default=None, help="labels of the runs, comma separated (default: folder names)")
    p.add_argument("--samplers", default=None,
                   help="one sampler per run, comma separated (default: each run's sample.sampler)")
    p.add_argument("--no-nll", action="store_true", help="skip the likelihood")
    p.add_argument("--no-quality", action="store_true", help="skip the sample-quality metrics (keep timing, grids)")
    p.add_argument("--seed", type=int, default=0, help="random seed (same seed, same numbers)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or mps")
    p.add_argument("--out", default=None, help="report folder (default: compare/ beside the first run)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--debug", action="store_true", help="show the full traceback on errors")
    p.set_defaults(func=run)


def parse_ints(text: str, flag: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ConfigError(f"{flag} takes positive integers separated by commas, got {text!r}") from None
    if not values or min(values) < 1:
        raise ConfigError(f"{flag} takes positive integers separated by commas, got {text!r}")
    return values


def split_names(text: str | None) -> list[str] | None:
    return None if text is None else [v.strip() for v in text.split(",")]


def run(args: argparse.Namespace) -> int:
    from bfn.evaluation.compare import compare_runs
    from bfn.evaluation.nll import parse_steps
    from bfn.utils.runtime import resolve_device

    for flag in ("n", "nll_repeats", "batch_size", "limit", "evolution_steps"):
        value = getattr(args, flag)
        if value is not None and value <= 0:
            raise ConfigError(f"--{flag.replace('_', '-')} must be a positive integer, got {value}")
    steps = None if args.steps is None else parse_ints(args.steps, "--steps")
    nll_steps = parse_steps(args.nll_steps)
    out = Path(args.out) if args.out else Path(args.runs[0]).parent / "compare"
    device = resolve_device(args.device)
    result = compare_runs(args.runs, out, steps=steps, n=args.n, nll_steps=nll_steps, nll_repeats=args.nll_repeats,
                          limit=args.limit, batch_size=args.batch_size, seed=args.seed, device=device,
                          names=split_names(args.names), samplers=split_names(args.samplers), nll=not args.no_nll,
                          quality=not args.no_quality, evolution_steps=args.evolution_steps,
                          progress=not args.no_progress)
    for note in result["notes"]:
        print(f"note: {note}")
    print(f"wrote {result['report']} (and {', '.join(result['figures'].values()) or 'no figures'}, compare.json) "
          f"in {result['wall_seconds']:.0f} s")
    return 0
