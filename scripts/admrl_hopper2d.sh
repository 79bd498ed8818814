#!/usr/bin/env bash
# AdMRL vs MB-Unif vs MB-Gauss on Hopper2D (Lin et al. 2020, §5.2, Figs. 3–4), CPU-sized.
#
#   scripts/admrl_hopper2d.sh [OUT_DIR]          (default runs/admrl-hopper2d)
#
# 1. trains admrl, mb-unif and mb-gauss with the same preset: the same number of training tasks
#    and of real samples per task (AdMRL's task gradient reuses the SLBO collections);
# 2. builds the trained oracle A*(ψ) for the grid (one TRPO policy per task, cached under
#    $ADAPTRL_ORACLE_CACHE, default OUT_DIR/oracle-cache; reused when already built);
# 3. evaluates every run on the PER_DIM × PER_DIM grid over Ψ with the budgets STEPS (real
#    samples per task; multiples of fast_batch × horizon adapt, see `adaptrl eval --help`);
# 4. writes the comparison (returns and worst-case gap tables, curves, G_n^max vs n, gap
#    heatmaps side by side) and the plot of the tasks visited during meta-training.
# Every step can be re-run: finished trainings are resumed (a no-op when complete), the oracle
# comes from the cache, evaluations and reports are rewritten.
#
# Environment (defaults: a few minutes on one CPU core; the paper's setting is PRESET=paper,
# HORIZON=200, STEPS=0,2000,4000,6000, ITERATIONS=20, and a much longer-trained oracle):
#   PRESET          preset of the three methods (smoke)
#   ITERATIONS      training tasks per method (3)
#   HORIZON         episode length, the same for training, oracle and evaluation (50)
#   STEPS           evaluation budgets in real samples per task (0,200,400)
#   EVAL_EPISODES   fresh episodes per task after adapting (2)
#   PER_DIM         grid points per parameter (6)
#   ORACLE_ITERATIONS / ORACLE_EPISODES / ORACLE_EVAL_EPISODES / ORACLE_HIDDEN
#                   per-task TRPO of the oracle (10 / 4 / 4 / 32,32)
#   SEED            training seed of every method (0)
#   OVERRIDES       extra config overrides of every method, e.g. "task_lr=2.0 n_inner=3"
set -euo pipefail

OUT=${1:-runs/admrl-hopper2d}
FAMILY=hopper-2d
PRESET=${PRESET:-smoke}
ITERATIONS=${ITERATIONS:-3}
HORIZON=${HORIZON:-50}
STEPS=${STEPS:-0,200,400}
EVAL_EPISODES=${EVAL_EPISODES:-2}
PER_DIM=${PER_DIM:-6}
ORACLE_ITERATIONS=${ORACLE_ITERATIONS:-10}
ORACLE_EPISODES=${ORACLE_EPISODES:-4}
ORACLE_EVAL_EPISODES=${ORACLE_EVAL_EPISODES:-4}
ORACLE_HIDDEN=${ORACLE_HIDDEN:-32,32}
SEED=${SEED:-0}
export ADAPTRL_ORACLE_CACHE=${ADAPTRL_ORACLE_CACHE:-$OUT/oracle-cache}
export ADAPTRL_TORCH_THREADS=${ADAPTRL_TORCH_THREADS:-1} OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
METHODS=(admrl mb-unif mb-gauss)
mkdir -p "$OUT"
say() { echo "[$(date +%T)] $*"; }

for algo in "${METHODS[@]}"; do
    resume=()
    [ -f "$OUT/$algo/checkpoints/latest.pt" ] && resume=(--resume)
    say "train $algo ${resume[*]}"
    extra=()
    for kv in ${OVERRIDES:-}; do extra+=(--set "$kv"); done
    adaptrl train "$algo" "$FAMILY" --preset "$PRESET" --seed "$SEED" --out "$OUT/$algo" \
        --set iterations="$ITERATIONS" --set horizon="$HORIZON" "${extra[@]}" --no-progress \
        "${resume[@]}" \
        > "$OUT/$algo.train.log" 2>&1 || { cat "$OUT/$algo.train.log"; exit 1; }
    tail -n 1 "$OUT/$algo.train.log"
done

say "oracle: $FAMILY, ${PER_DIM}x${PER_DIM} grid, horizon $HORIZON (cache $ADAPTRL_ORACLE_CACHE)"
adaptrl oracle "$FAMILY" --split grid --per-dim "$PER_DIM" --horizon "$HORIZON" \
    --iterations "$ORACLE_ITERATIONS" --episodes "$ORACLE_EPISODES" \
    --eval-episodes "$ORACLE_EVAL_EPISODES" --hidden "$ORACLE_HIDDEN" > "$OUT/oracle.log"
grep -E "oracle for|A\* mean|wrote|using" "$OUT/oracle.log"

for algo in "${METHODS[@]}"; do
    say "eval $algo on the grid, budgets $STEPS"
    adaptrl eval "$OUT/$algo" --split grid --per-dim "$PER_DIM" --steps "$STEPS" \
        --episodes "$EVAL_EPISODES" > "$OUT/$algo.eval.log"
    sed -n '/^| n /,/^$/p' "$OUT/$algo.eval.log"
done

say "compare"
adaptrl compare "${METHODS[@]/#/$OUT/}" --split grid --out "$OUT/compare-grid"
say "visited tasks"
adaptrl plot-tasks "${METHODS[@]/#/$OUT/}" --out "$OUT/compare-grid/visited_tasks.png"
say "done: $OUT/compare-grid"
