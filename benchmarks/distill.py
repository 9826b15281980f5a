"""Few-step quality of a distilled student (`bfn distill`) against its teacher's samplers, over several seeds.

    python -m benchmarks.distill TEACHER_RUN STUDENT_RUN [--n 500] [--seeds 0,1,2]
        [--cells student:distilled:1,student:distilled:2,student:distilled:4,teacher:sde2:4,teacher:paper:999]

A cell is ROLE:SAMPLER:STEPS[:FINAL] (ROLE = teacher or student; FINAL = sample (default), mode or mean: what
the last step returns, see `bfn sample --final`). NFE (network evaluations) = STEPS for the distilled
sampler, which returns its last evaluation's output, and STEPS + 1 for every other sampler (the final evaluation
of p_O at t = 1), so teacher:sde2:4 costs 5 NFE and teacher:paper:999 costs 1,000. Each cell draws `--n` samples per
seed and scores them as benchmarks.samplers does (FID in the features of bfn's MNIST classifier against the
teacher's test split, the binarization of the reference drawn from the seed); the table shows the mean and the
standard deviation over seeds. Writes benchmarks/results/distill_<teacher>.json after every cell (cells already
there, with the same n and seed, are kept), so the 1,000-NFE reference can run on its own, e.g. on a GPU:

    python -m benchmarks.distill RUN_T RUN_S --cells teacher:paper:999 --device cuda
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any

import torch

from benchmarks.samplers import RESULTS, draw, summary
from bfn.utils.io import atomic_write_text

DEFAULT_CELLS = ("student:distilled:1,student:distilled:2,student:distilled:4,teacher:sde2:4,teacher:ode2:4,"
                 "teacher:sde2:9")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.distill", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("teacher", help="the teacher's run directory")
    p.add_argument("student", help="the student's run directory (bfn distill)")
    p.add_argument("--cells", default=DEFAULT_CELLS, help="ROLE:SAMPLER:STEPS, comma separated")
    p.add_argument("--n", type=int, default=500, help="samples per cell and seed")
    p.add_argument("--seeds", default="0,1,2", help="seeds, comma separated")
    p.add_argument("--batch-size", type=int, default=250, help="samples per model.sample call")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads on CPU")
    p.add_argument("--out", default=str(RESULTS), help="folder for the JSON")
    return p.parse_args(argv)


def parse_cells(text: str) -> list[tuple[str, str, int, str]]:
    """'ROLE:SAMPLER:STEPS[:FINAL],...' -> [(role, sampler, steps, final)] (SystemExit naming a bad cell)."""
    from bfn.samplers import get_sampler

    cells = []
    for spec in text.split(","):
        parts = spec.strip().split(":")
        role, sampler, steps = (parts + ["", "", ""])[:3]
        final = parts[3] if len(parts) == 4 else "sample"
        if len(parts) not in (3, 4) or role not in ("teacher", "student") or final not in ("sample", "mode", "mean") \
                or not steps.isdigit():
            raise SystemExit(f"cell {spec!r}: ROLE:SAMPLER:STEPS[:FINAL], role teacher or student, final sample, "
                             "mode or mean")
        get_sampler(sampler)
        cells.append((role, sampler, int(steps), final))
    return cells


def nfe(sampler: str, steps: int) -> int:
    return steps if sampler == "distilled" else steps + 1


def markdown(results: dict[str, Any]) -> str:
    lines = ["| model | sampler | NFE | FID mean | sd over seeds | seeds | n per seed |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    for _key, cell in sorted(results["cells"].items(), key=lambda kv: (kv[1]["nfe"], kv[0])):
        fids = [v["fid"] for v in cell["seeds"].values()]
        sd = statistics.stdev(fids) if len(fids) > 1 else float("nan")
        final = cell.get("final", "sample")
        sampler = cell["sampler"] + ("" if final == "sample" else f" ({final})")
        lines.append(f"| {cell['role']} | {sampler} | {cell['nfe']} | {statistics.mean(fids):.2f} | "
                     f"{sd:.2f} | {len(fids)} | {cell['n']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from bfn.evaluation.classifier import load_classifier
    from bfn.evaluation.compare import load_run, reference_images
    from bfn.evaluation.quality import sample_quality
    args = parse_args(argv)
    cells = parse_cells(args.cells)
    seeds = [int(s) for s in args.seeds.split(",")]
    if args.device == "cpu":
        torch.set_num_threads(args.threads)
    runs = {"teacher": load_run(args.teacher, device=args.device),
            "student": load_run(args.student, device=args.device)}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"distill_{runs['teacher'].name}.json"
    results: dict[str, Any] = json.loads(path.read_text()) if path.is_file() else {}
    results.update({"teacher": str(args.teacher), "student": str(args.student)})
    results.setdefault("cells", {})
    classifier = load_classifier(device=args.device)
    refs = {seed: reference_images(runs["teacher"], limit=None, seed=seed) for seed in seeds}
    for role, sampler, steps, final in cells:
        key = f"{role}:{sampler}:{steps}" + ("" if final == "sample" else f":{final}")
        cell = results["cells"].setdefault(key, {"role": role, "sampler": sampler, "steps": steps, "final": final,
                                                 "nfe": nfe(sampler, steps), "n": args.n, "seeds": {}})
        if cell["n"] != args.n:
            cell.update(n=args.n, seeds={})
        for seed in seeds:
            if str(seed) in cell["seeds"]:
                continue
            samples, seconds = draw(runs[role], sampler, steps, n=args.n, batch_size=args.batch_size, seed=seed,
                                    final=final)
            q = sample_quality(samples, refs[seed], classifier=classifier, seed=seed, device=args.device)
            cell["seeds"][str(seed)] = {"seconds": seconds, **summary(q)}
            print(f"{key:28s} NFE {cell['nfe']:5d} seed {seed}  FID {q['fid']:8.3f}  ({seconds:.0f} s)", flush=True)
            atomic_write_text(path, json.dumps(results, indent=1))
    print(markdown(results))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
