"""`bfn sample RUN`: draw samples (a PNG grid and a .npy file), optionally class-conditional with classifier-free
guidance (`--label 7 --guidance 2`) or inpainting an image (`--inpaint digit.png --mask top`)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from bfn.commands import HelpFormatter
from bfn.errors import ConfigError

EPILOG = """examples:
  bfn sample runs/mnist-discrete --n 64 --steps 100
  bfn sample runs/mnist-discrete --sampler sde2 --steps 10         # a fast sampler
  bfn sample runs/mnist-discrete-cond --label 7 --guidance 2       # draw sevens
  bfn sample runs/mnist-discrete --inpaint digit.png --mask top    # complete the bottom half
  bfn sample runs/mnist-discrete --inpaint digit.png --mask mask.png   # white mask pixels are kept
  bfn sample runs/shakespeare-discrete --n 5                       # text runs print and write a .txt file
  bfn sample runs/shakespeare-discrete --prompt "to be or not to be"   # the model continues a fixed prefix
"""


def register(subparsers: Any) -> None:
    """Add the `sample` subcommand."""
    from bfn.data.observation import MASK_REGIONS
    from bfn.samplers.inpaint import INPAINT_METHODS

    p = subparsers.add_parser("sample", help="draw samples from a trained run: a PNG grid and a .npy file",
                              epilog=EPILOG, formatter_class=HelpFormatter)
    p.add_argument("run", help="run directory written by `bfn train`")
    p.add_argument("--n", type=int, default=64, help="number of samples (default 64)")
    p.add_argument("--steps", type=int, default=None,
                   help="sampling steps (network evaluations; default: the model's usual count, 100 for a BFN)")
    p.add_argument("--sampler", default=None, help="sampler name (see `bfn samplers`; default: the model's first, "
                   "paper for a BFN)")
    p.add_argument("--final", default="sample", choices=["sample", "mode", "mean"],
                   help="what the last step returns: a draw from the output distribution (the paper, default), its "
                        "mode or its mean")
    p.add_argument("--label", type=int, default=None, help="class label for a class-conditional run (e.g. 7)")
    p.add_argument("--guidance", type=float, default=0.0,
                   help="classifier-free guidance scale w: (1 + w) out(label) - w out(null) (default 0: none)")
    p.add_argument("--inpaint", default=None, metavar="IMAGE",
                   help="image whose observed pixels (see --mask) are kept; the model draws the rest")
    p.add_argument("--mask", default=None,
                   help=f"with --inpaint: a PNG (white = observed) or one of {', '.join(MASK_REGIONS)} (the part kept)")
    p.add_argument("--inpaint-method", default="exact", choices=list(INPAINT_METHODS),
                   help="exact: the network sees observed pixels at infinite accuracy (default); flow: they follow "
                        "the Bayesian flow of the observation (see bfn.samplers.inpaint)")
    p.add_argument("--prompt", default=None,
                   help="text runs: a fixed prefix (lowercased, non-letters become spaces); the model writes the rest")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda or mps")
    p.add_argument("--out", default=None,
                   help="output PNG path, .txt for text runs (default: RUN/samples_<sampler>_<steps>.png or .txt)")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the network first: minutes of compilation on a CPU, then faster steps; pays "
                        "off for long runs (see benchmarks/RESULTS.md)")
    p.add_argument("--debug", action="store_true", help="show the full traceback on errors")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    from bfn.data.text import data_is_text, text_observation
    from bfn.models import from_pretrained
    from bfn.utils.io import atomic_write
    from bfn.utils.runtime import resolve_device
    from bfn.viz.grid import save_sample_grid

    if args.guidance and args.label is None:
        raise ConfigError("--guidance needs --label (the class to guide towards), e.g. --label 7 --guidance 2")
    if (args.inpaint is None) != (args.mask is None):
        raise ConfigError("--inpaint IMAGE and --mask MASK go together (mask: a PNG, white = observed, or a region "
                          "such as top)")
    device = resolve_device(args.device)
    model = from_pretrained(args.run, device=device)
    if args.compile:
        model.compile_networks()
    data = model.data
    kwargs: dict[str, Any] = {}
    if args.label is not None:
        kwargs.update(cond=args.label, guidance=args.guidance)
    if args.inpaint is not None:
        if not model.capabilities.inpainting:
            raise ConfigError(f"a {model.family} model cannot inpaint; inpaint with a BFN run")
        from bfn.data.observation import load_observation

        kwargs["inpaint"] = load_observation(args.inpaint, args.mask, kind=data.kind, shape=data.shape,
                                             num_classes=data.num_classes, num_bins=data.num_bins)
        kwargs["inpaint_method"] = args.inpaint_method
    text = data_is_text(data)
    if text and args.final == "mean":
        raise ConfigError("--final mean returns class probabilities, not text; use --final sample or mode")
    if args.prompt is not None:
        if not text or args.inpaint is not None:
            raise ConfigError("--prompt needs a text run (27-symbol sequences) and no --inpaint")
        kwargs["inpaint"] = text_observation(args.prompt, int(data.shape[0]))
        kwargs["inpaint_method"] = args.inpaint_method
    gen = torch.Generator(device=device).manual_seed(args.seed)
    steps = args.steps if args.steps is not None else model.capabilities.default_steps
    sampler = args.sampler if args.sampler is not None else model.capabilities.default_sampler
    x = model.sample(args.n, steps, sampler=sampler, generator=gen, final=args.final, **kwargs)
    tag = "" if args.label is None else f"_label{args.label}_w{args.guidance:g}"
    tag += "" if args.inpaint is None else "_inpaint"
    tag += "" if args.prompt is None else "_prompt"
    suffix = ".txt" if text else ".png"
    out = Path(args.out) if args.out else Path(args.run) / f"samples_{sampler}_{steps}{tag}{suffix}"
    if text:
        from bfn.viz.text import write_text_samples

        path = write_text_samples(x, out)
        print(path.read_text(), end="")
        print(f"wrote {path}")
        return 0
    values, note, drawn = x.cpu().numpy(), "", False
    if (Path(args.run) / "config.yaml").is_file() and args.final != "mean":
        from bfn.config import load_config

        cfg = load_config(str(Path(args.run) / "config.yaml"))
        if cfg.data.name == "array":  # the user's own data: back to their layout, dtype and values
            from bfn.evaluation.report import own_data_format, save_own_data_picture

            fmt = own_data_format(cfg)
            values = fmt.to_user(x)
            note = f" ({tuple(values.shape)} {values.dtype}: the layout and values of {cfg.data.options['path']})"
            save_own_data_picture(cfg, fmt, data, x, values, out, seed=args.seed)
            drawn = True
    if not drawn:
        save_sample_grid(x, out, kind=data.kind, num_bins=data.num_bins, num_classes=data.classes)

    def write_npy(tmp: str) -> None:
        with open(tmp, "wb") as f:
            np.save(f, values)

    atomic_write(out.with_suffix(".npy"), write_npy)
    print(f"wrote {out} and {out.with_suffix('.npy')}{note}")
    return 0
