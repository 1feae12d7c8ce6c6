#!/usr/bin/env bash
# The GPU check of issue 24 (docstring of experiments/gpu_check.py): bench at two batch sizes
# for Megatron-1T and DeepSeek-V3, the co-design search both ways, GPU vs CPU JSON.
#   experiments/gpu_check.sh            full size (goal: under 5 minutes on one GPU)
#   SMALL=1 experiments/gpu_check.sh    tiny batches and the small co-design (CPU test)
#   SIZE=N experiments/gpu_check.sh     grid points per free field of the co-design (default 9)
# Needs only JAX and numpy: the worktree goes on PYTHONPATH. One line per figure,
# "figure: value unit"; exit status 1 when a comparison or a step fails.
set -u
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
exec "${PYTHON:-python}" experiments/gpu_check.py "$@"
