#!/usr/bin/env bash
# HalfCheetah-Vel results for FLAP, PEARL and MAML: in-distribution and out-of-distribution
# returns after adaptation, and the adaptation-latency benchmark (the tables in docs/results.md).
#
#   scripts/cheetah_vel_results.sh [OUT_DIR]          (default runs/cheetah-vel)
#
# Every method trains on `cheetah-vel-hard` (target velocities U[0, 1.5]) and is evaluated on
#   * in distribution: the 20 velocities of scripts/tasks/cheetah-vel-in.json (0 to 1.5), and
#   * out of distribution: its `ood` split, 40 velocities from U[2.5, 3.0].
# The four trainings run side by side (set the thread counts below for your machine).
#
# Environment:
#   TRAIN_SECONDS  stop each training after this many seconds (0: run all iterations); the
#                  evaluation then uses the last checkpoint, and a rerun resumes the training
#   ITERATIONS     override every method's iterations (e.g. to extend a finished run)
#   EVAL_EPISODES  fresh episodes per task after adapting (default 5)
#   FLAP_PRESET / PEARL_PRESET / MAML_PRESET  (defaults cheetah-cpu, cheetah-cpu, locomotion)
set -euo pipefail

OUT=${1:-runs/cheetah-vel}
FAMILY=cheetah-vel-hard
TRAIN_SECONDS=${TRAIN_SECONDS:-0}
EVAL_EPISODES=${EVAL_EPISODES:-5}
IN_TASKS=$(dirname "$0")/tasks/cheetah-vel-in.json
mkdir -p "$OUT"

# name algo preset torch_threads [--set ...]
train() {
    local name=$1 algo=$2 preset=$3 threads=$4
    shift 4
    local resume=()
    [ -f "$OUT/$name/checkpoints/latest.pt" ] && resume=(--resume)
    local cmd=(adaptrl train "$algo" "$FAMILY" --preset "$preset" --out "$OUT/$name"
               --set checkpoint_every=5 ${ITERATIONS:+--set iterations=$ITERATIONS} "$@"
               "${resume[@]}")
    echo "[$(date +%T)] ${cmd[*]}"
    if [ "$TRAIN_SECONDS" -gt 0 ]; then
        ADAPTRL_TORCH_THREADS=$threads ADAPTRL_MUJOCO_THREADS=2 \
            timeout "$TRAIN_SECONDS" "${cmd[@]}" > "$OUT/$name.log" 2>&1 || true
    else
        ADAPTRL_TORCH_THREADS=$threads ADAPTRL_MUJOCO_THREADS=2 "${cmd[@]}" > "$OUT/$name.log" 2>&1
    fi
    echo "[$(date +%T)] $name: $(tail -n 1 "$OUT/$name.log")"
}

train flap flap "${FLAP_PRESET:-cheetah-cpu}" 2 &
train flap-replay flap "${FLAP_PRESET:-cheetah-cpu}" 2 --set adapter_data=replay &
train pearl pearl "${PEARL_PRESET:-cheetah-cpu}" 2 &
train maml maml "${MAML_PRESET:-locomotion}" 4 &
wait

evaluate() {  # name steps
    ADAPTRL_TORCH_THREADS=2 adaptrl eval "$OUT/$1" --tasks "$IN_TASKS" --steps "$2" \
        --episodes "$EVAL_EPISODES" > "$OUT/$1.eval-in.log" 2>&1
    ADAPTRL_TORCH_THREADS=2 adaptrl eval "$OUT/$1" --split ood --steps "$2" \
        --episodes "$EVAL_EPISODES" > "$OUT/$1.eval-ood.log" 2>&1
}
evaluate flap 0,1,2 &
evaluate flap-replay 0,1,2 &
evaluate pearl 0,1,2 &
evaluate maml 0,1 &
wait

runs=("$OUT/flap" "$OUT/flap-replay" "$OUT/pearl" "$OUT/maml")
adaptrl compare "${runs[@]}" --split cheetah-vel-in
adaptrl compare "${runs[@]}" --split ood
adaptrl bench adapt cheetah-vel --algos flap,pearl,maml --json > "$OUT/bench_adapt.json"
adaptrl bench adapt cheetah-vel --algos flap,pearl,maml
