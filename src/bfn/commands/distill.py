"""`bfn distill RUN`: distill a trained BFN into a few-step student (`bfn.training.distill`): 600 steps on its
teacher's ODE trajectories, then 400 with a critic against the training data (`--adversarial`, 0 turns it off);
sample it with `bfn sample STUDENT --sampler distilled --steps 1|2|4`."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from bfn.commands import HelpFormatter
from bfn.errors import CheckpointError, ConfigError

EPILOG = """examples:
  bfn distill runs/mnist-discrete                        # student in runs/mnist-discrete-student
  bfn distill runs/mnist-discrete --resume               # continue a stopped distillation
  bfn distill runs/mnist-discrete train.steps=300 train.threads=1
  bfn distill runs/mnist-discrete --adversarial 0           # the teacher's ODE trajectories only (600 steps)
  bfn distill runs/mnist-discrete --adversarial-nfe 1,2,4   # the critic also trains the 1- and 2-step samplers
  bfn sample runs/mnist-discrete-student --sampler distilled --steps 2
"""

#: the trainer settings of a distillation, before the user's overrides
DEFAULTS = ["train.steps=600", "train.lr=0.0002", "train.warmup_steps=50", "train.ema_decay=0.99",
            "train.sample_every=0", "train.checkpoint_every=100", "train.log_every=20", "sample.sampler=distilled",
            "sample.steps=4"]


#: the critic's weight by default, and the total trainer steps when it is on (600 of trajectories alone, then 400)
ADVERSARIAL = 1.0
ADVERSARIAL_STEPS = "train.steps=1000"


def register(subparsers: Any) -> None:
    """Add the `distill` subcommand."""
    p = subparsers.add_parser("distill", help="distill a trained BFN into a student that samples in 1-4 steps",
                              epilog=EPILOG, formatter_class=HelpFormatter)
    p.add_argument("run", help="the teacher: a run directory written by `bfn train`")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help=f"trainer overrides (defaults here: {' '.join(DEFAULTS)})")
    p.add_argument("--out", default=None, help="student run directory (default: RUN-student)")
    p.add_argument("--resume", action="store_true", help="continue the distillation in --out")
    p.add_argument("--student-steps", type=int, default=4,
                   help="the student's finest grid; it then samples in 1, 2, .. this many evaluations (power of 2)")
    p.add_argument("--substeps", type=int, default=8, help="teacher ODE steps per student interval (default 8)")
    p.add_argument("--trajectories", type=int, default=1024, help="teacher trajectories to learn from (default 1024)")
    p.add_argument("--seed", type=int, default=0, help="seed of the teacher's initial draws (default 0)")
    p.add_argument("--adversarial", type=float, default=ADVERSARIAL,
                   help=f"weight of a critic that tells the student's samples from the training data (Sauer et al. "
                        f"2023); 0 turns it off (default {ADVERSARIAL})")
    p.add_argument("--adversarial-start", type=int, default=600,
                   help="trainer steps of trajectory distillation before the critic joins (default 600)")
    p.add_argument("--adversarial-nfe", default=None, metavar="N,N,..",
                   help="evaluations of the student's draws that the critic sees, one at random per batch, e.g. "
                        "1,2,4 (1,1,2,4: 1 in half the batches; default: --student-steps only)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="device")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--debug", action="store_true", help="show the full traceback on errors")
    p.set_defaults(func=run)


def nfe_list(text: str | None) -> list[int] | None:
    """'4,1,2,1' -> [1, 1, 2, 4] (a number listed twice is drawn twice as often); a ConfigError naming the value if
    it is not a list of whole numbers."""
    if text is None:
        return None
    parts = [part.strip() for part in text.split(",")]
    if not all(part.isdigit() for part in parts):
        raise ConfigError(f"--adversarial-nfe takes whole numbers separated by commas, e.g. 1,2,4; got {text!r}")
    return sorted(int(part) for part in parts)


def run(args: argparse.Namespace) -> int:
    import torch

    from bfn.config import load_config
    from bfn.models import from_pretrained
    from bfn.training import train
    from bfn.training.checkpoint import STATE_NAME, lock_run_dir
    from bfn.training.distill import (
        SETTINGS_NAME,
        DistillSettings,
        bfn_teacher,
        read_settings,
        student_setup,
        teacher_pass,
        training_data,
        write_settings,
    )

    teacher_dir = Path(args.run)
    if not (teacher_dir / "config.yaml").is_file():
        raise CheckpointError(f"{teacher_dir / 'config.yaml'} not found; give a run directory written by `bfn train`")
    out = Path(args.out) if args.out else teacher_dir.with_name(teacher_dir.name + "-student")
    if out.resolve() == teacher_dir.resolve():
        raise ConfigError("--out must differ from the teacher's run directory")
    if args.resume:
        settings = read_settings(out)
    else:
        if (out / SETTINGS_NAME).exists() or (out / STATE_NAME).exists():
            raise CheckpointError(f"{out} already holds a distillation; add --resume to continue it, or choose "
                                  "another --out directory")
        settings = DistillSettings(teacher=str(teacher_dir), steps=args.student_steps, substeps=args.substeps,
                                   trajectories=args.trajectories, seed=args.seed, adversarial=args.adversarial,
                                   adversarial_start=args.adversarial_start,
                                   adversarial_nfe=nfe_list(args.adversarial_nfe)).check()
    extra = [ADVERSARIAL_STEPS] if settings.adversarial > 0 else []
    cfg = load_config(str(teacher_dir / "config.yaml"), [*DEFAULTS, *extra, *args.overrides])
    cfg.name = out.name
    cpu = args.device == "cpu" or (args.device == "auto" and not torch.cuda.is_available())
    if cfg.train.threads and cpu:
        torch.set_num_threads(cfg.train.threads)
    teacher = bfn_teacher(from_pretrained(teacher_dir, device="cpu" if cpu else "cuda"))
    with lock_run_dir(out):  # one process per folder, also during the teacher pass
        if not args.resume:
            write_settings(out, settings)
        teacher_pass(teacher, out, settings, progress=not args.no_progress)
    reals = training_data(cfg) if settings.adversarial > 0 else None
    resume = args.resume and (out / STATE_NAME).exists()
    result = train(cfg, out, resume=resume, device=args.device, progress=not args.no_progress,
                   setup=lambda: student_setup(teacher.cpu(), out, settings, reals))
    print(f"distilled {result.step} steps in {result.wall_seconds:.1f} s (training; the teacher pass comes before); "
          f"student: {out}. Sample it with: bfn sample {out} --sampler distilled --steps {settings.steps}")
    return 0
