"""A probe for issue 22: a distilled student's ODE steps for the coarse start, the teacher's SDE solver for the rest.

    python -m benchmarks.distill_hybrid TEACHER_RUN STUDENT_RUN [--n 500] [--seeds 0,1,2]
        [--cells 2:1:2:2,4:2:1:1,2:1:1:1]

A cell is G:J:M:ORDER: J evaluations of the student (`bfn distill`) on its G-step grid (`student_grid`; the 1-, 2-
and 4-step grids nest, so 1 step on the 2-grid lands where 2 steps on the 4-grid land), each followed by its
first-order ODE step, which brings the state to t_J; then M steps of the teacher's BFN-Solver SDE of order ORDER
(`solver_step`, stochastic) on a grid uniform in lambda from lambda(t_J) to lambda_1, and the teacher's final
evaluation at t = 1, from which the sample is drawn. NFE = J + M + 1 (two networks are held in memory).

Why: a student distilled from the teacher's ODE can at best match that ODE, and on discrete data the ODE is worse
than the SDE solvers and the paper's sampler (benchmarks/RESULTS.md, "Few-step sampling by distillation"); the
student is good at the long first stretch, where the SDE solvers need many steps, and the SDE's fresh noise at the
end washes out what the ODE carries. Scores as benchmarks.distill does (FID in the features of bfn's MNIST
classifier against the teacher's test split, binarization drawn from the seed; the same seed draws the same
initial noise). Writes benchmarks/results/distill_hybrid_<teacher>.json.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path
from typing import Any

import torch

from benchmarks import common
from benchmarks.samplers import summary


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.distill_hybrid", description=__doc__.split("\n\n")[0])
    p.add_argument("teacher", help="the teacher's run directory")
    p.add_argument("student", help="the student's run directory (bfn distill)")
    p.add_argument("--cells", default="2:1:2:2,4:2:1:1,2:1:1:1", help="G:J:M:ORDER, comma separated")
    p.add_argument("--n", type=int, default=500, help="samples per cell and seed")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--batch-size", type=int, default=250)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=str(common.RESULTS))
    return p.parse_args(argv)


@torch.no_grad()
def hybrid_sample(teacher: Any, student: Any, n: int, *, grid_steps: int, student_steps: int, sde_steps: int,
                  order: int, generator: torch.Generator) -> torch.Tensor:
    """n samples (data format) of the hybrid described in the module docstring."""
    from bfn.samplers.base import final_value
    from bfn.samplers.bfn_solver import solver_step
    from bfn.samplers.distilled import student_grid
    from bfn.samplers.gaussian_path import GaussianPath

    path = GaussianPath(teacher.flow)
    grid = student_grid(path, grid_steps)
    z = path.initial((n, *teacher.data_shape), grid[0], generator=generator, device=teacher.device)
    for i in range(student_steps):
        t, s = grid[i], grid[i + 1]
        output = student.output_distribution(path.theta(z, t), torch.full((n,), t, device=teacher.device))
        z = solver_step(z, path.data_estimate(output), path=path, t=t, s=s, stochastic=False)
    lam_0, lam_1 = path.log_snr(grid[student_steps]), path.log_snr(1.0)
    taus = [path.time_at(lam_0 + (lam_1 - lam_0) * k / sde_steps) for k in range(sde_steps)] + [1.0]
    prev = None
    for k in range(sde_steps):
        t, s = taus[k], taus[k + 1]
        output = teacher.output_distribution(path.theta(z, t), torch.full((n,), t, device=teacher.device))
        d = path.data_estimate(output)
        z = solver_step(z, d, path=path, t=t, s=s, stochastic=True, prev=prev if order == 2 else None,
                        generator=generator)
        prev = (path.log_snr(t), d)
    output = teacher.output_distribution(path.theta(z, 1.0), torch.ones(n, device=teacher.device))
    return final_value(output, "sample", generator)


def main(argv: list[str] | None = None) -> int:
    from bfn.evaluation.classifier import load_classifier
    from bfn.evaluation.compare import display_samples, load_run, reference_images
    from bfn.evaluation.quality import sample_quality

    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    teacher, student = load_run(args.teacher), load_run(args.student)
    t_model, s_model = teacher.model.eval(), student.model.eval()
    seeds = [int(s) for s in args.seeds.split(",")]
    classifier = load_classifier()
    refs = {seed: reference_images(teacher, limit=None, seed=seed) for seed in seeds}
    results: dict[str, Any] = {"teacher": str(args.teacher), "student": str(args.student), "n": args.n, "cells": {}}
    for spec in args.cells.split(","):
        g, j, m, order = (int(v) for v in spec.split(":"))
        if j > g or m < 1 or order not in (1, 2):
            raise SystemExit(f"cell {spec!r}: need J <= G, M >= 1 and ORDER 1 or 2")
        cell: dict[str, Any] = {"grid": g, "student_steps": j, "sde_steps": m, "order": order, "nfe": j + m + 1,
                                "seeds": {}}
        for seed in seeds:
            gen = torch.Generator().manual_seed(seed)
            chunks = [hybrid_sample(t_model, s_model, min(args.batch_size, args.n - i), grid_steps=g,
                                    student_steps=j, sde_steps=m, order=order, generator=gen)
                      for i in range(0, args.n, args.batch_size)]
            q = sample_quality(display_samples(teacher, torch.cat(chunks)), refs[seed], classifier=classifier,
                               seed=seed)
            cell["seeds"][str(seed)] = summary(q)
        fids = [v["fid"] for v in cell["seeds"].values()]
        results["cells"][spec] = cell
        print(f"G={g} J={j} M={m} order {order} NFE {cell['nfe']}: FID " + " / ".join(f"{f:.2f}" for f in fids)
              + f"  mean {statistics.mean(fids):.2f}", flush=True)
    path = common.write_json(args.out, f"distill_hybrid_{Path(args.teacher).name}", results)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
