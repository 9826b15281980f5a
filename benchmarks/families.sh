#!/usr/bin/env bash
# Train every lecture-family preset for the same wall-clock budget, one after another (train phase), then evaluate
# each run (eval phase): NLL (bound or estimate, nats/image, with standard errors) where the family has a
# likelihood, and classifier FID.
#   benchmarks/families.sh [OUT_DIR] [SECONDS_PER_RUN] [train|eval|all]   (defaults: runs/families, 900, all)
# A run is stopped by SIGINT after SECONDS_PER_RUN: the trainer finishes its step, saves and exits. The eval sizes
# (IWAE_K, NLL_LIMIT, QUALITY_N, AIS_STEPS) can be lowered on a loaded machine; the defaults are the thorough ones.
set -u
OUT=${1:-runs/families}
BUDGET=${2:-900}
PHASE=${3:-all}
PRESETS=${PRESETS:-"mnist-vae mnist-flow mnist-gan mnist-wgan-gp mnist-rbm mnist-vae-grey mnist-flow-grey"}
IWAE_K=${IWAE_K:-1000}
NLL_LIMIT=${NLL_LIMIT:-}   # empty: the whole test split (1,000 images)
QUALITY_N=${QUALITY_N:-1000}
AIS_STEPS=${AIS_STEPS:-10000}
mkdir -p "$OUT"
export OMP_NUM_THREADS=1  # evaluation on one thread too (shared CPUs)
limit=${NLL_LIMIT:+--limit $NLL_LIMIT}
if [ "$PHASE" != eval ]; then
  for p in $PRESETS; do
    run="$OUT/$p"
    echo "== $p: training for ${BUDGET}s into $run ($(date -u +%T))"
    timeout -s INT "$BUDGET" nice -n 10 bfn train "$p" --out "$run" --no-progress > "$OUT/$p.train.log" 2>&1
    tail -n 1 "$OUT/$p.train.log"
  done
fi
[ "$PHASE" = train ] && exit 0
for p in $PRESETS; do
  run="$OUT/$p"
  case $p in
    mnist-vae*)
      echo "== $p: -ELBO on the whole test split, -IWAE-$IWAE_K on ${NLL_LIMIT:-all} ($(date -u +%T))"
      nice -n 10 bfn eval "$run" --nll --steps 1 --no-progress > "$OUT/$p.elbo.log" 2>&1
      cp "$run/eval.json" "$run/eval-elbo.json"; tail -n 3 "$OUT/$p.elbo.log"
      nice -n 10 bfn eval "$run" --nll --steps "1,$IWAE_K" $limit --no-progress > "$OUT/$p.nll.log" 2>&1 ;;
    mnist-flow*) nice -n 10 bfn eval "$run" --nll --steps 1 --no-progress > "$OUT/$p.nll.log" 2>&1 ;;
    mnist-rbm) nice -n 10 bfn eval "$run" --nll --steps "$AIS_STEPS" --no-progress > "$OUT/$p.nll.log" 2>&1 ;;
  esac
  [ -f "$OUT/$p.nll.log" ] && tail -n 4 "$OUT/$p.nll.log"
  echo "== $p: --quality --n $QUALITY_N ($(date -u +%T))"
  nice -n 10 bfn eval "$run" --quality --n "$QUALITY_N" --no-progress > "$OUT/$p.quality.log" 2>&1
  tail -n 8 "$OUT/$p.quality.log"
done
echo "== done ($(date -u +%T))"
