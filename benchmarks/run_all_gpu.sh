#!/usr/bin/env bash
# Every GPU figure the README promises, in one command (sized for under 10 minutes on one GPU):
#   segmentation of a 512 x 512 x 200 CT vs the MONAI tutorial pipeline (paper UNETR),
#   the warm worker's repeat, the training loop vs the MONAI pipeline and the model-only step,
#   the folder-mode overhead, and DDP scaling on all visible GPUs (when there are two or more).
# Each writes benchmarks/results/*-cuda.json; the README's tables are then re-rendered from them.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
PY=${PYTHON:-python}
GPUS=$($PY -c "import torch; print(torch.cuda.device_count())")
if [ "$GPUS" -lt 1 ]; then echo "No CUDA GPU visible." >&2; exit 1; fi

$PY benchmarks/segment_benchmark.py --device cuda
$PY benchmarks/warm_benchmark.py --device cuda
$PY benchmarks/train_benchmark.py --device cuda --iterations 50
$PY benchmarks/folder_benchmark.py --device cuda --images 20
if [ "$GPUS" -ge 2 ]; then
  $PY -m torch.distributed.run --standalone --nproc-per-node "$GPUS" benchmarks/train_benchmark.py --device cuda --iterations 50
fi
$PY benchmarks/render_tables.py
