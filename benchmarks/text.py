"""Text runs: bits/char against n-gram baselines, and the vocabulary score against network evaluations.

    python -m benchmarks.text RUN [--n 200] [--nfe 10,20,50,100,1000] [--samplers paper,ode1,ode2,sde1,sde2]
    python -m benchmarks.text RUN --nfe 1000 --samplers paper,sde2 --n 100    # the costly column on its own

RUN is a `bfn train` directory of a text run (e.g. /work/runs/shakespeare-discrete). Two tables:
1. bits/char on the run's test split (`--nll-limit` windows): the BFN bounds L^n + L^r for `--nll-steps` and
   L^inf + L^r (`bfn.evaluation.nll.evaluate_nll`, ± one standard error over windows), with unigram and bigram
   models fitted on the training split and scored on the same windows (`bfn.evaluation.text.ngram_baselines`),
   and the bound that the best network ignoring context would reach (`context_free_bound`): a model at that
   line has learned the letter frequencies and nothing about neighbouring characters;
2. the share of sampled words found in the training vocabulary (`bfn.evaluation.text.text_quality`), for each
   sampler and budget of network evaluations (NFE = steps + 1: every sampler ends with one evaluation of p_O at
   t = 1), with held-out text (ceiling) and unigram/bigram samples (floors).

Writes benchmarks/results/text.json (after every cell; cells accumulate across invocations unless --fresh) and
prints both tables in Markdown for benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks import common


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.text", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("run", help="run directory of a text run")
    p.add_argument("--n", type=int, default=200, help="samples per vocabulary cell")
    p.add_argument("--nfe", default="10,20,50,100,1000", help="network evaluations per sample (steps + 1)")
    p.add_argument("--samplers", default="paper,ode1,ode2,sde1,sde2", help="sampler names")
    p.add_argument("--nll-steps", default="10,100,1000,inf", help="bounds for the bits/char table ('' to skip)")
    p.add_argument("--nll-limit", type=int, default=4000, help="test windows for the bits/char table")
    p.add_argument("--repeats", type=int, default=3, help="Monte Carlo repeats of the bits/char table")
    p.add_argument("--batch-size", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--out", default=str(common.RESULTS), help="folder for text.json")
    p.add_argument("--fresh", action="store_true", help="recompute cells that text.json already holds")
    return p.parse_args(argv)


def context_free_bound(train_ids: Any, test_ids: Any, beta_1: float, *, n: int = 200_000, seed: int = 0) -> float:
    """Bits/char of the continuous-time bound L^inf + L^r for the best network that ignores context: the
    Bayes-optimal output from a character's own input and the unigram prior, e-hat = softmax(y + ln pi) with
    y ~ N(beta(t) (K e_x - 1), beta(t) K I), beta(t) = beta(1) t^2; L^inf = K beta(1) E_t[t |e_x - e-hat|^2],
    L^r = -E ln e-hat_x(1) (Graves et al. 2023, eqs. 181-183). Monte Carlo over n test characters."""
    import numpy as np

    from bfn.evaluation.text import unigram_probs

    k = 27
    rng = np.random.default_rng(seed)
    log_pi = np.log(unigram_probs(np.asarray(train_ids), smoothing=1.0))
    x = np.asarray(test_ids)[rng.integers(0, len(test_ids), n)].astype(np.int64)
    one_hot = np.eye(k)[x]

    def posterior(beta: Any) -> Any:
        beta = np.broadcast_to(beta, (n,))[:, None]
        y = beta * (k * one_hot - 1) + np.sqrt(beta * k) * rng.standard_normal((n, k))
        z = y + log_pi
        z -= z.max(1, keepdims=True)
        p = np.exp(z)
        return p / p.sum(1, keepdims=True)

    t = rng.random(n)
    l_inf = k * beta_1 * t * ((one_hot - posterior(beta_1 * t**2)) ** 2).sum(1)
    l_r = -np.log(posterior(np.asarray(beta_1))[np.arange(n), x])
    return float((l_inf.mean() + l_r.mean()) / np.log(2))


def bits_table(entry: dict[str, Any]) -> str:
    nll = entry.get("nll")
    if not nll:
        return ""
    lines = [f"| model ({nll['n_examples']} test windows of {nll['dims']} characters) | bits/char | MC s.e. |",
             "|---|---:|---:|"]
    for res in nll["results"].values():
        mc = "" if res.get("nats_mc_se") is None else f"{res['nats_mc_se'] / nll['dims'] / 0.6931471805599453:.3f}"
        lines.append(f"| BFN, {res['bound']} | {res['bits_per_dim']:.3f} ± {res['bits_per_dim_se']:.3f} | {mc} |")
    for name, res in nll["ngram"].items():
        if isinstance(res, dict):
            lines.append(f"| {name} (fitted on train) | {res['bits_per_char']:.3f} ± {res['bits_per_char_se']:.3f} | |")
    if "context_free_bound" in nll:
        bound = nll["context_free_bound"]
        lines.append(f"| BFN bound of the best context-free network (Monte Carlo) | {bound:.3f} | |")
    return "\n".join(lines)


def vocab_table(entry: dict[str, Any]) -> str:
    cells = entry.get("vocab", {})
    nfes = sorted({int(k) for per in cells.values() for k in per})
    if not nfes:
        return ""
    lines = ["| words in the training vocabulary (%) | " + " | ".join(f"NFE {k}" for k in nfes) + " |",
             "|---|" + "---:|" * len(nfes)]
    for sampler, per in cells.items():
        row = [f"{100 * per[str(k)]['score']:.1f} ± {100 * per[str(k)]['score_se']:.1f}" if str(k) in per else ""
               for k in nfes]
        lines.append(f"| {sampler} | " + " | ".join(row) + " |")
    for name, r in entry.get("reference", {}).items():
        lines.append(f"| {name} | {100 * r['score']:.1f} ± {100 * r['score_se']:.1f} |" + " |" * (len(nfes) - 1))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from bfn.evaluation.nll import evaluate_nll, materialize, parse_steps
    from bfn.evaluation.runs import load_run, test_split
    from bfn.evaluation.text import ngram_baselines, split_ids, text_quality, train_split

    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    run = load_run(args.run, device="cpu")
    cfg, model = run.cfg, run.model
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    json_path = out / "text.json"
    results: dict[str, Any] = json.loads(json_path.read_text()) if json_path.is_file() else {}
    entry = results.setdefault(cfg.name, {})
    saved = json.loads((Path(args.run) / "config.json").read_text())
    entry.update(path=str(args.run), model_step=saved.get("step"), dataset=cfg.data.name,
                 seq_len=int(model.data_shape[0]))

    def save() -> None:
        common.write_json(out, "text", results)

    train_ids = split_ids(train_split(cfg))
    test = materialize(test_split(run), seed=args.seed)
    if args.nll_steps and (args.fresh or "nll" not in entry):
        windows = test[: args.nll_limit]
        nll = evaluate_nll(model, windows, steps=parse_steps(args.nll_steps), batch_size=args.batch_size,
                           seed=args.seed, repeats=args.repeats, progress=True)
        nll["ngram"] = ngram_baselines(train_ids, windows)
        nll["context_free_bound"] = context_free_bound(train_ids, windows.reshape(-1).numpy(),
                                                       float(model.flow.beta_1))
        entry["nll"] = nll
        save()
    for sampler in [s for s in args.samplers.split(",") if s]:
        for nfe in [int(k) for k in args.nfe.split(",") if k]:
            cell = entry.setdefault("vocab", {}).setdefault(sampler, {})
            if not args.fresh and cell.get(str(nfe), {}).get("n") == args.n:
                continue
            t0 = time.perf_counter()
            res = text_quality(model, train_ids, test, steps=[nfe - 1], samplers=[sampler], n=args.n,
                               seed=args.seed, batch_size=args.batch_size)
            if args.n >= entry.get("reference_n", 0):  # keep the references of the largest n
                entry["reference"], entry["reference_n"] = res["reference"], args.n
            entry["vocabulary_size"] = res["vocabulary_size"]
            cell[str(nfe)] = {"n": args.n, "steps": nfe - 1, "seconds": time.perf_counter() - t0,
                              **res["model"][sampler][str(nfe - 1)]}
            print(f"{sampler:8s} NFE {nfe:5d}  vocabulary score {100 * cell[str(nfe)]['score']:.1f}%  "
                  f"({cell[str(nfe)]['seconds']:.0f} s)  e.g. {cell[str(nfe)]['examples'][0]!r}", flush=True)
            save()
    print(bits_table(entry))
    print()
    print(vocab_table(entry))
    print(f"wrote {json_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
