#!/usr/bin/env bash
# The quality measurements the CPU could not make, in one command, on one CUDA GPU:
#   1. which network the GPU plan should default to: SegResNet (16 filters) vs UNETR (the paper's),
#      each with lwi and scratch, at the same time budget per run (the plan sets everything else);
#   2. whether LWI pays at the GPU plan's budget: lwi vs scratch at K = 5, 10, 20 (strategy auto's rule
#      says lwi there, from the paper, not from a measurement of ours);
#   3. the paper's Table 1 on DATA: lwi vs scratch with --recipe paper (UNETR 96^3, 14,400 + 90,000
#      iterations; scratch matched to lwi's total), 3 training seeds on all training cases, then the
#      8-organ mean of each model when LABELS are given (docs/reproduce-paper.md). Hours per run: its
#      estimate is printed first by lwi plan. Set PARTS="3" to run only it.
# Usage: benchmarks/run_gpu_experiments.sh DATA OUT [MINUTES_PER_RUN] [TEST] [LABELS]
#   DATA: an MSD-style labelled dataset (e.g. the 30-case hippocampus development set); OUT: a folder;
#   TEST: a labelled test folder for part 3 (e.g. the Synapse test12 of benchmarks/synapse_split.py;
#   default: 20% of DATA held out); LABELS: label values of part 3's mean, e.g. "1 2 3 4 6 7 8 11".
# Each part writes an lwi experiment folder (results.jsonl, report.md, report.html, plots) under OUT.
set -euo pipefail
again() { [ -f "$1/experiment.json" ] && echo --resume || true; }  # continue a folder an earlier call began
DATA=${1:?usage: $0 DATA OUT [MINUTES_PER_RUN]}
OUT=${2:?usage: $0 DATA OUT [MINUTES_PER_RUN]}
MIN=${3:-10}
TEST=${4:-}
LABELS=${5:-}
PARTS=${PARTS:-1 2 3}
PY=${PYTHON:-python}
$PY -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" || { echo "No CUDA GPU visible." >&2; exit 1; }
if [[ " $PARTS " == *" 1 "* ]]; then
  for ARCH in segresnet unetr; do
    $PY -m lwi experiment --data "$DATA" --test-cases 10 --strategies lwi scratch --k 5 --seeds 0 1 2 \
      --arch "$ARCH" --time "${MIN}m" --device cuda --out "$OUT/arch-$ARCH" $(again "$OUT/arch-$ARCH")
  done
fi
if [[ " $PARTS " == *" 2 "* ]]; then
  $PY -m lwi experiment --data "$DATA" --test-cases 10 --strategies lwi scratch --k 5 10 20 --seeds 0 1 2 \
    --device cuda --out "$OUT/lwi-vs-scratch" $(again "$OUT/lwi-vs-scratch")
fi
if [[ " $PARTS " == *" 3 "* ]]; then
  N=$($PY -c "import sys; from lwi.data.dataset import load_dataset; print(len(load_dataset(sys.argv[1]).cases))" "$DATA")
  if [ -n "$TEST" ]; then SPLIT=(--test "$TEST"); K=$N; else HELD=$(( (N + 4) / 5 )); SPLIT=(--test-cases "$HELD"); K=$(( N - HELD )); fi
  $PY -m lwi plan --data "$DATA" --recipe paper --strategy lwi --device cuda  # the estimated time per run
  $PY -m lwi experiment --data "$DATA" "${SPLIT[@]}" --strategies lwi scratch --k "$K" --seeds 0 1 2 \
    --recipe paper --device cuda --out "$OUT/table1" $(again "$OUT/table1")
  if [ -n "$LABELS" ]; then
    for RUN in "$OUT"/table1/runs/*/; do
      # shellcheck disable=SC2086 # LABELS is a list of values
      $PY -m lwi evaluate --model "$RUN/model.lwi.safetensors" --data "$OUT/table1/splits/test" --labels $LABELS \
        --json "$RUN/evaluation-labels.json" --device cuda --overwrite
    done
  fi
fi
