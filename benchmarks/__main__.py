"""The performance suite: training throughput, sampling throughput and NLL-evaluation time in one run.

    python -m benchmarks                       # CPU, a few minutes on 2 cores
    python -m benchmarks --quick               # smoke run, seconds (tiny batches; the numbers mean nothing)
    python -m benchmarks --threads 2           # fix torch's intra-op threads
    python -m benchmarks --device cuda --bf16  # GPU, under bfloat16 autocast
    python -m benchmarks --only training,nll   # a subset

Runs `benchmarks.training`, `benchmarks.sampling` and `benchmarks.nll` in one process (see their docstrings for
what each measures and their own flags, all accepted here), writes benchmarks/results/{training,sampling,nll}.json
and summary.md, and prints the Markdown summary (for benchmarks/RESULTS.md). The optimisation experiments are a
separate, longer run: `python -m benchmarks.optimisations`; sample quality against NFE is
`python -m benchmarks.samplers RUN...`.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from benchmarks import common, nll, sampling, training

SUITES = {"training": training, "sampling": sampling, "nll": nll}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    common.add_common_args(p)
    p.add_argument("--only", default=",".join(SUITES), help="benchmarks to run, comma separated")
    for module in SUITES.values():
        module.add_args(p)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = sorted(set(only) - set(SUITES))
    if unknown:
        raise SystemExit(f"unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(SUITES)}")
    t0 = time.perf_counter()
    sections = []
    for name in only:
        module = SUITES[name]
        start = time.perf_counter()
        result = module.run(args)
        result["wall_seconds"] = time.perf_counter() - start
        path = common.write_json(args.out, name, result)
        sections.append(module.markdown(result))
        print(f"wrote {path} ({result['wall_seconds']:.0f} s)", flush=True)
    mode = " (--quick smoke run: not a measurement)" if args.quick else ""
    summary = "\n\n".join([f"## Performance{mode}", *sections,
                           f"Suite wall time: {time.perf_counter() - t0:.0f} s."]) + "\n"
    out = Path(args.out) / "summary.md"
    out.write_text(summary)
    print()
    print(summary)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
