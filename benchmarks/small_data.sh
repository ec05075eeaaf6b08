#!/usr/bin/env bash
# Small-data defaults, measured with lwi experiment (issue 23, section 5): with 5-10 labelled cases,
#   A. all drawn cases trained (last weights; --val-fraction 0, the experiment's default) vs one in five
#      held out for validation (best weights by validation Dice; --val-fraction 0.2);
#   B. mirror test-time augmentation at inference on vs off (the same models of A's all-trained arm,
#      evaluated again with lwi evaluate --mirror).
# K 5 and 10, draws (seeds) 0 1 2, 10 test cases held out of DATA, strategy scratch (the CPU plan's
# choice at these budgets) unless STRATEGY is set; the budget is the plan's unless ITERATIONS is set
# (Step-2 iterations; a stated reduced budget for a shared CPU). Both arms of A train the same draws.
# benchmarks/small_data_compare.py then writes the draw-level comparisons to
# benchmarks/results/small-data-<device>.json.
# Usage: benchmarks/small_data.sh DATA OUT [ITERATIONS]
#   e.g. OMP_NUM_THREADS=1 nice -n 10 benchmarks/small_data.sh hippocampus-dev runs/small-data 200
set -euo pipefail
again() { [ -f "$1/experiment.json" ] && echo --resume || true; }
DATA=${1:?usage: $0 DATA OUT [ITERATIONS]}
OUT=${2:?usage: $0 DATA OUT [ITERATIONS]}
ITER=${3:-}
PY=${PYTHON:-python}
STRATEGY=${STRATEGY:-scratch}
KS=${KS:-5 10}
SEEDS=${SEEDS:-0 1 2}
BUDGET=()
[ -n "$ITER" ] && BUDGET=(--iterations "$ITER")
# shellcheck disable=SC2086 # KS and SEEDS are lists
for ARM in "all-trained 0" "validation-held-out 0.2"; do
  set -- $ARM
  $PY -m lwi experiment --data "$DATA" --test-cases 10 --strategies "$STRATEGY" --k $KS --seeds $SEEDS \
    "${BUDGET[@]}" --val-fraction "$2" --out "$OUT/$1" $(again "$OUT/$1")
done
for RUN in "$OUT"/all-trained/runs/*/; do
  [ -f "$RUN/evaluation-mirror.json" ] || $PY -m lwi evaluate --model "$RUN/model.lwi.safetensors" \
    --data "$OUT/all-trained/splits/test" --mirror --json "$RUN/evaluation-mirror.json"
done
$PY "$(dirname "$0")/small_data_compare.py" "$OUT"
