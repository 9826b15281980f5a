#!/usr/bin/env bash
# Train every lecture-family preset for the same wall-clock budget, one after another, and evaluate each run:
# NLL (bound or estimate, nats/image, with standard errors) where the family has a likelihood, and classifier FID.
#   benchmarks/families.sh [OUT_DIR] [SECONDS_PER_RUN]     (defaults: runs/families, 900)
# A run is stopped by SIGINT after SECONDS_PER_RUN: the trainer finishes its step, saves and exits.
set -u
OUT=${1:-runs/families}
BUDGET=${2:-900}
PRESETS=${PRESETS:-"mnist-vae mnist-flow mnist-gan mnist-wgan-gp mnist-rbm mnist-vae-grey mnist-flow-grey"}
mkdir -p "$OUT"
export OMP_NUM_THREADS=1  # evaluation on one thread too (shared CPUs)
for p in $PRESETS; do
  run="$OUT/$p"
  echo "== $p: training for ${BUDGET}s into $run ($(date -u +%T))"
  timeout -s INT "$BUDGET" nice -n 10 bfn train "$p" --out "$run" --no-progress > "$OUT/$p.train.log" 2>&1
  tail -n 2 "$OUT/$p.train.log"
  case $p in
    mnist-vae*) nll="--nll --steps 1,1000" ;;
    mnist-flow*) nll="--nll --steps 1" ;;
    mnist-rbm) nll="--nll --steps 10000" ;;
    *) nll="" ;;
  esac
  if [ -n "$nll" ]; then
    echo "== $p: $nll ($(date -u +%T))"
    nice -n 10 bfn eval "$run" $nll --no-progress > "$OUT/$p.nll.log" 2>&1; tail -n 5 "$OUT/$p.nll.log"
  fi
  echo "== $p: --quality ($(date -u +%T))"
  nice -n 10 bfn eval "$run" --quality --n 1000 --no-progress > "$OUT/$p.quality.log" 2>&1
  tail -n 8 "$OUT/$p.quality.log"
done
echo "== done ($(date -u +%T))"
