#!/usr/bin/env bash
# On a CUDA machine: the GPU-only tests, then the GPU benchmark (tables in the README).
#
#   bash scripts/gpu_check.sh [OUT_DIR]
#
# Runs tests/test_graphs.py (CUDA graphs == eager, graphed training == eager, resume) and
# tests/test_fused.py (Triton kernels == PyTorch, on the GPU in full fp32), then
# benchmarks/run.py --device cuda for the baseline and every GPU implementation, batch 8
# and 256, training and inference, after benchmarks/fused_mlp.py (the MLP kernels alone);
# the JSON goes to OUT_DIR (default benchmarks/results).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-benchmarks/results}
python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA device')"
python -m pytest -q -p no:cacheprovider tests/test_graphs.py tests/test_fused.py
python benchmarks/fused_mlp.py --out "$out"
python benchmarks/run.py --device cuda --rounds 2 --iters 10 --no-startup --out "$out" \
    --impls baseline ncaflow graph graph-fast graph-compiled-tf32 graph-fused graph-fused-ckpt
