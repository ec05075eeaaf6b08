#!/usr/bin/env bash
# The quality measurements the CPU could not make, in one command, on one CUDA GPU:
#   1. which network the GPU plan should default to: SegResNet (16 filters) vs UNETR (the paper's),
#      each with lwi and scratch, at the same time budget per run (the plan sets everything else);
#   2. whether LWI pays at the GPU plan's budget: lwi vs scratch at K = 5, 10, 20 (strategy auto's rule
#      says lwi there, from the paper, not from a measurement of ours).
# Usage: benchmarks/run_gpu_experiments.sh DATA OUT [MINUTES_PER_RUN]
#   DATA: an MSD-style labelled dataset (e.g. the 30-case hippocampus development set); OUT: a folder.
# Each part writes an lwi experiment folder (results.jsonl, report.md, report.html, plots) under OUT.
set -euo pipefail
again() { [ -f "$1/experiment.json" ] && echo --resume || true; }  # continue a folder an earlier call began
DATA=${1:?usage: $0 DATA OUT [MINUTES_PER_RUN]}
OUT=${2:?usage: $0 DATA OUT [MINUTES_PER_RUN]}
MIN=${3:-10}
PY=${PYTHON:-python}
$PY -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" || { echo "No CUDA GPU visible." >&2; exit 1; }
for ARCH in segresnet unetr; do
  $PY -m lwi experiment --data "$DATA" --test-cases 10 --strategies lwi scratch --k 5 --seeds 0 1 2 \
    --arch "$ARCH" --time "${MIN}m" --device cuda --out "$OUT/arch-$ARCH" $(again "$OUT/arch-$ARCH")
done
$PY -m lwi experiment --data "$DATA" --test-cases 10 --strategies lwi scratch --k 5 10 20 --seeds 0 1 2 \
  --device cuda --out "$OUT/lwi-vs-scratch" $(again "$OUT/lwi-vs-scratch")
