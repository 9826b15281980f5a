"""`bfn eval RUN --nll | --quality`: test-set likelihood in nats and bits, and sample quality, into RUN/eval.json.

--nll evaluates the bounds L^n + L^r (and L^inf + L^r for "inf") on the run's test split, R Monte Carlo repeats
per example, with standard errors over examples. --quality samples the model and compares the samples with the
test split in the features of bfn's own MNIST classifier (28x28 digits) or two-digit recogniser (64x64 multi-digit
canvases); the test images are
taken in the model's data format (binarized data: one seeded binarization, 16 bins: bin centres), so that the
samples are compared with data of their own kind.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path
from typing import Any

from bfn.commands import HelpFormatter
from bfn.errors import CheckpointError, ConfigError

DEFAULT_NLL_STEPS = "10,100,inf"
EPILOG = """examples:
  bfn eval runs/mnist-discrete --nll --steps 10,100,784,inf --repeats 4
  bfn eval runs/mnist-discrete --nll --limit 200                 # a quick look at the first 200 test images
  bfn eval runs/mnist-discrete-paper --protocol paper --repeats 4 # the paper's L^784 + L^r, nats/image
  bfn eval runs/mnist-discrete --quality --n 1000 --steps 100
  bfn eval runs/mnist-discrete --nll --quality --sample-steps 50  # both, into the same eval.json
  bfn eval runs/shakespeare-discrete --nll --text --n 200         # bits/char and vocabulary scores of a text run
"""


def register(subparsers: Any) -> None:
    """Add the `eval` subcommand."""
    p = subparsers.add_parser("eval", help="test-set NLL (nats, bits/dim) and sample quality of a run",
                              description=__doc__.splitlines()[0], epilog=EPILOG,
                              formatter_class=HelpFormatter)
    p.add_argument("run", help="run directory written by `bfn train`")
    what = p.add_argument_group("what to measure (one or both; --nll when neither is given)")
    what.add_argument("--nll", action="store_true", help="negative log-likelihood bounds on the test split")
    what.add_argument("--quality", action="store_true",
                      help="FID/KID, precision/recall, density/coverage, label entropy (28x28 grey images)")
    what.add_argument("--text", action="store_true",
                      help="text runs: share of sampled words in the training vocabulary at --text-steps, with "
                           "held-out text (ceiling) and unigram/bigram samples (floors)")
    p.add_argument("--text-steps", default="10,20,50,100",
                   help="--text: sampling step counts, comma separated (default 10,20,50,100)")
    p.add_argument("--steps", default=None,
                   help=f"--nll: step counts, comma separated, 'inf' = continuous time (default {DEFAULT_NLL_STEPS})"
                        "; --quality alone: sampling steps (default: the run's sample.steps)")
    p.add_argument("--repeats", type=int, default=None,
                   help="--nll: Monte Carlo repeats per test example (default 1; --protocol paper: the official count)")
    p.add_argument("--redraw-data", action="store_true",
                   help="--nll: binarize the test set afresh in every repeat (default: once, from --seed, so the "
                        "repeats' spread is the estimator's Monte Carlo error alone)")
    p.add_argument("--protocol", choices=["paper"], default=None,
                   help="--nll as the paper reports each benchmark: MNIST L^784 + L^r in nats/image, CIFAR-10 L^10 + "
                        "L^r in bits/dim, text L^inf + L^r in bits/char (--repeats and --limit shorten it)")
    p.add_argument("--batch-size", type=int, default=256,
                   help="examples per forward pass and per sampling batch (default 256)")
    p.add_argument("--limit", type=int, default=None, help="use only the first N test examples (default: all)")
    p.add_argument("--n", type=int, default=1000,
                   help="--quality, --text: number of samples (per cell for --text; default 1000)")
    p.add_argument("--sample-steps", type=int, default=None,
                   help="--quality: sampling steps when --steps holds the NLL step counts")
    p.add_argument("--sampler", default=None,
                   help="--quality: sampler name (default: the run's sample.sampler); --text: names, comma separated")
    p.add_argument("--final", default="sample", choices=["sample", "mode", "mean"],
                   help="--quality: what the last sampling step returns (default: sample, as in the paper)")
    p.add_argument("--seed", type=int, default=0, help="random seed; same seed, same numbers (default 0)")
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda or mps")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--debug", action="store_true", help="show the full traceback on errors")
    p.set_defaults(func=run)


# --- pieces ---------------------------------------------------------------------------------------------
def is_text_run(model: Any) -> bool:
    """Whether the run models 27-symbol text (text8, shakespeare)."""
    from bfn.data.text import data_is_text

    return data_is_text(model.data)


def quality_shape_check(model: Any) -> Any:
    """The classifier recipe for the run's images: bfn's MNIST classifier for 28x28 digits, the two-digit
    recogniser for 64x64 multi-digit canvases."""
    from bfn.evaluation.classifier import MNIST
    from bfn.evaluation.multidigit import TWO_DIGIT

    shape = model.data.shape
    for recipe in (MNIST, TWO_DIGIT):
        if tuple(shape) == recipe.factory.image_shape:
            return recipe
    if shape != (1, 28, 28):
        raise ConfigError(f"--quality uses bfn's MNIST classifier and needs 28x28 single-channel images (or its "
                          f"two-digit recogniser: 64x64 canvases); this run's "
                          f"data have shape {shape}. Use --nll, or `bfn show RUN --grid` to look at samples")


def draw_samples(model: Any, n: int, steps: int | None, *, sampler: str, final: str, seed: int, batch_size: int,
                 progress: bool) -> Any:
    """n samples in batches of `batch_size` from one seeded generator, mapped to [0, 1] images on the CPU."""
    import torch
    from tqdm import tqdm

    from bfn.viz.grid import to_unit_interval

    info = model.data
    gen = torch.Generator(device=model.device).manual_seed(seed)
    chunks = []
    with tqdm(total=n, desc=f"sampling ({steps} steps)", disable=not progress, dynamic_ncols=True) as bar:
        for start in range(0, n, batch_size):
            m = min(batch_size, n - start)
            x = model.sample(m, steps, sampler=sampler, generator=gen, final=final)
            chunks.append(to_unit_interval(x.cpu(), info.kind, num_classes=info.classes))
            bar.update(m)
    return torch.cat(chunks)


def _pm(value: float, se: float | None, digits: int) -> str:
    if se is None or not math.isfinite(se):
        return f"{value:.{digits}f}"
    return f"{value:.{digits}f} ± {se:.{digits}f}"


def nll_table(result: dict[str, Any]) -> str:
    """The NLL results as a fixed-width table."""
    unit = result.get("unit", "dim")
    rows = [("bound", "nats/example", f"nats/{unit}", f"bits/{unit}", "MC s.e. (nats)")]
    for res in result["results"].values():
        mc = res.get("nats_mc_se")
        rows.append((res["bound"], _pm(res["nats"], res["nats_se"], 2), _pm(res["nats_per_dim"],
                     res["nats_per_dim_se"], 4), _pm(res["bits_per_dim"], res["bits_per_dim_se"], 4),
                     "-" if mc is None else f"{mc:.2f}"))
    uniform = result.get("uniform")
    if uniform:
        rows.append((f"uniform over {uniform['values']} values", f"{uniform['nats']:.2f}",
                     f"{uniform['nats_per_dim']:.4f}", f"{uniform['bits_per_dim']:.4f}", ""))
    for name, res in (result.get("ngram") or {}).items():
        if isinstance(res, dict):
            bits = _pm(res["bits_per_char"], res["bits_per_char_se"], 4)
            rows.append((f"{name} model (fitted on train)", "", "", bits, ""))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    lines = []
    for row in rows:
        cells = [row[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)]
        lines.append("  ".join(cells))
    return "\n".join(lines)


def quality_table(result: dict[str, Any]) -> str:
    """The sample-quality results as a fixed-width table."""
    ref = result["reference"]
    rows = [("FID (classifier features)", f"{result['fid']:.3f}"),
            ("KID", f"{result['kid']:.4f} ± {result['kid_std']:.4f}"),
            (f"precision / recall (k={result['k']})", f"{result['precision']:.3f} / {result['recall']:.3f}"),
            ("density / coverage", f"{result['density']:.3f} / {result['coverage']:.3f}"),
            ("classifier confidence", f"{result['confidence']:.3f} (test data {ref['confidence']:.3f})"),
            ("label entropy (nats)", f"{result['label_entropy']:.3f} of max {result['label_entropy_max']:.3f} "
                                     f"(test data {ref['label_entropy']:.3f})"),
            ("readable (max prob >= 0.9)", f"{result['readable']:.3f} (test data {ref['readable']:.3f})"),
            (f"label histogram 0-{len(result['label_histogram']) - 1}",
             " ".join(str(v) for v in result["label_histogram"]))]
    width = max(len(r[0]) for r in rows)
    return "\n".join(f"{name.ljust(width)}  {value}" for name, value in rows)


# --- the command ----------------------------------------------------------------------------------------
def run(args: argparse.Namespace) -> int:
    from bfn.evaluation.nll import evaluate_nll, materialize, parse_steps, write_eval
    from bfn.utils.runtime import resolve_device

    run_dir = Path(args.run)
    do_nll = args.nll or not (args.quality or args.text) or args.protocol is not None
    for flag in ("repeats", "batch_size", "limit", "n", "sample_steps"):
        value = getattr(args, flag)
        if value is not None and value <= 0:
            raise ConfigError(f"--{flag.replace('_', '-')} must be a positive integer, got {value}")
    if args.protocol is not None and args.steps is not None:
        raise ConfigError("--protocol paper chooses the bound itself; drop --steps (or drop --protocol)")
    nll_steps = parse_steps(args.steps or DEFAULT_NLL_STEPS) if do_nll else None
    sample_steps = args.sample_steps
    if args.quality and sample_steps is None and args.steps is not None and not do_nll:
        try:
            sample_steps = int(args.steps)
        except ValueError:
            raise ConfigError(f"--quality samples with one step count; got --steps {args.steps!r} "
                              "(e.g. --steps 100)") from None
    device = resolve_device(args.device)
    from bfn.evaluation.runs import load_run, test_split

    if not run_dir.is_dir():
        raise CheckpointError(f"{run_dir} is not a directory; give a run directory written by `bfn train`")
    one_sampler = args.sampler if args.sampler and "," not in args.sampler else None  # --text takes a list
    loaded = load_run(run_dir, device=device, sampler=one_sampler)
    cfg, model = loaded.cfg, loaded.model
    if args.quality:
        recipe = quality_shape_check(model)
    test = test_split(loaded)
    progress = not args.no_progress
    context = {"run": str(run_dir), "model_step": model.config.get("step"), "dataset": cfg.data.name,
               "split": "test", "device": device}
    if do_nll and model.capabilities.likelihood == "none" and "distilled" in model.config:
        print(f"{run_dir} is a distilled student (`bfn distill`): its output distributions were fitted to its "
              "teacher's sampling trajectories, so the BFN loss is no bound on its likelihood and no NLL is reported; "
              f"evaluate the teacher ({model.config['distilled'].get('teacher')}) for likelihoods")
        do_nll = False
    protocol = None
    if args.protocol is not None:
        from bfn.evaluation.protocol import paper_protocol

        protocol = paper_protocol(model.data)
        nll_steps = [protocol.steps]
    repeats = args.repeats or (protocol.repeats if protocol is not None else 1)
    if do_nll:
        assert nll_steps is not None
        print(f"evaluating the NLL of {run_dir} on {cfg.data.name} (test split), steps "
              f"{', '.join(map(str, nll_steps))}, {repeats} repeat(s)")
        result = evaluate_nll(model, test, steps=nll_steps, repeats=repeats, batch_size=args.batch_size,
                              seed=args.seed, device=device, limit=args.limit, progress=progress,
                              redraw_data=args.redraw_data)
        result = {**context, "limit": args.limit, **result}
        if is_text_run(model):
            from bfn.evaluation.text import ngram_baselines, split_ids, train_split

            result["unit"] = "char"
            result["ngram"] = ngram_baselines(split_ids(train_split(cfg)),
                                              materialize(test, limit=args.limit, seed=args.seed))
        print(f"{result['n_examples']} test examples, {result['dims']} dims, {result['repeats']} repeat(s), "
              f"{result['wall_seconds']:.1f} s; ± is one standard error over examples (Monte Carlo noise and the "
              "real spread of the examples); MC s.e.: the Monte Carlo standard error of the mean (repeat means)")
        print(nll_table(result))
        if cfg.data.name == "array":  # the user's own data: continuous values scaled to [-1, 1] for the model
            from bfn.evaluation.report import own_data_format, user_units_shift

            shift = user_units_shift(own_data_format(cfg), model.data.kind, int(result["dims"]))
            if shift is not None:
                result["user_units_nats"] = {str(k): r["nats"] + shift for k, r in result["results"].items()}
                print("in your units (before the scaling to [-1, 1]), nats/example: " + ", ".join(
                    f"{r['bound']} {result['user_units_nats'][str(k)]:.3f}" for k, r in result["results"].items()))
        if protocol is not None:
            from bfn.evaluation.protocol import headline

            result["protocol"] = {"benchmark": protocol.benchmark, "unit": protocol.unit,
                                  "paper_value": protocol.paper_value, "paper_source": protocol.paper_source}
            print(headline(protocol, result))
        print(f"wrote {write_eval(run_dir, 'nll', result)}")
    if args.quality:
        from bfn.evaluation.quality import sample_quality
        from bfn.viz.grid import to_unit_interval

        steps = (sample_steps or cfg.sample.steps) if model.capabilities.default_steps is not None else None
        sampler = loaded.sampler
        info = model.data
        t0 = time.perf_counter()
        reference = to_unit_interval(materialize(test, limit=args.limit, seed=args.seed), info.kind,
                                     num_classes=info.classes)
        samples = draw_samples(model, args.n, steps, sampler=sampler, final=args.final, seed=args.seed,
                               batch_size=args.batch_size, progress=progress)
        from bfn.evaluation.classifier import load_classifier

        result = sample_quality(samples, reference, seed=args.seed, device=device,
                                classifier=load_classifier(device=device, recipe=recipe))
        result = {**context, "sampling_steps": steps, "sampler": sampler, "final": args.final, "seed": args.seed,
                  **result, "wall_seconds": time.perf_counter() - t0}
        print(f"{args.n} samples ({sampler}, {steps} steps, final={args.final}) against {reference.shape[0]} test "
              f"images, in the features of bfn's {recipe.name} classifier (test accuracy "
              f"{100 * result.get('classifier', {}).get('test_accuracy', float('nan')):.1f}%)")
        print(quality_table(result))
        print(f"wrote {write_eval(run_dir, 'quality', result)}")
    if args.text:
        run_text(args, cfg, model, test, context, device)
    return 0


def run_text(args: argparse.Namespace, cfg: Any, model: Any, test: Any, context: dict[str, Any], device: str) -> None:
    """--text: vocabulary scores of samples against the training vocabulary, into RUN/eval.json "text"."""
    from bfn.evaluation.nll import materialize, parse_steps, write_eval
    from bfn.evaluation.text import split_ids, text_quality, text_quality_table, train_split

    if not is_text_run(model):
        raise ConfigError("--text needs a text run (discrete sequences over 27 symbols, e.g. shakespeare-discrete)")
    steps = [int(s) for s in parse_steps(args.text_steps) if s != "inf"]
    samplers = [s.strip() for s in (args.sampler or cfg.sample.sampler).split(",") if s.strip()]
    result = text_quality(model, split_ids(train_split(cfg)), materialize(test, seed=args.seed),
                          steps=steps, samplers=samplers, n=args.n, seed=args.seed, batch_size=args.batch_size,
                          final=args.final, progress=not args.no_progress)
    print(f"{args.n} samples per cell, {result['seq_len']} characters each; vocabulary of the training split: "
          f"{result['vocabulary_size']} words; ± is one standard error over sequences")
    print(text_quality_table(result))
    print(f"wrote {write_eval(Path(args.run), 'text', {**context, **result})}")
