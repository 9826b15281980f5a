#!/usr/bin/env bash
# The cells of issue 22 that do not fit on the shared 2-core CPU, for a GPU: the paper's sampler at 1,000 network
# evaluations (3 seeds x 500 samples) on both teachers, next to their students, plus the ODE solvers' convergence on
# mnist-discretized at 20-200 evaluations with the moved grid start (bfn.samplers.timegrid.FULL_STEPS).
#   bash benchmarks/distill_reference.sh RUNS_DIR            (RUNS_DIR holds the four runs named below)
#   N=8 SEEDS=0 DEVICE=cpu OUT=/tmp/ref bash benchmarks/distill_reference.sh RUNS_DIR   (CPU dry run, 90 s; N > 5)
set -euo pipefail
RUNS=${1:-runs}
N=${N:-500}
SEEDS=${SEEDS:-0,1,2}
DEVICE=${DEVICE:-cuda}
OUT=${OUT:-benchmarks/results}
for teacher in mnist-discretized mnist-discrete; do
  python -m benchmarks.distill "$RUNS/$teacher" "$RUNS/$teacher-student" --out "$OUT" --n "$N" --seeds "$SEEDS" \
    --device "$DEVICE" --batch-size 500 \
    --cells student:distilled:1,student:distilled:2,student:distilled:4,teacher:sde2:4,teacher:sde2:9,teacher:ode2:39,teacher:paper:999
done
python -m benchmarks.samplers "$RUNS/mnist-discretized" --out "$OUT" --samplers ode1,ode2,sde2 --nfe 20,50,100,200 \
  --n "$N" --device "$DEVICE" --batch-size 500
