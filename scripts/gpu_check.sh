#!/usr/bin/env bash
# On a CUDA machine: the GPU-only tests, the fused MLP kernels alone, then the GPU benchmark
# (tables in the README), in stages that each should fit a 10-minute call (a benchmark case
# took 26-34 s on an H200, most of it torch.compile and Triton compiling):
#
#   bash scripts/gpu_check.sh [STAGE] [OUT_DIR]
#
#   tests     tests/backends/test_graphs.py (CUDA graphs == eager, graphed training == eager, resume) and
#             tests/backends/test_fused.py (Triton kernels == PyTorch, on the GPU in full fp32)
#   mlp       benchmarks/fused_mlp.py: the MLP kernels' launch configurations
#   mlp-bwd   the same, forward + backward only
#   profile   benchmarks/profile_step.py: graph-fused's kernels at batch 8 and 256
#   bench8    benchmarks/run.py --device cuda at batch 8, training and inference (9 cases)
#   bench256  the same at batch 256
#   all       every stage in turn (the default)
#
# JSON goes to OUT_DIR (default benchmarks/results).
set -euo pipefail
cd "$(dirname "$0")/.."
stage=${1:-all}
out=${2:-benchmarks/results}
py=${PYTHON:-python3}                        # the interpreter that has torch with CUDA
export PYTHONPATH="src${PYTHONPATH:+:$PYTHONPATH}"  # runs from the checkout, installed or not
$py -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA device')"
bench() {
    $py benchmarks/run.py --device cuda --rounds 1 --iters 10 --no-startup --out "$out" \
        --batch "$1" --impls baseline graph graph-compiled-tf32 graph-fused graph-fused-ckpt
}
case $stage in
    tests) $py -m pytest -q -rf --tb=short -p no:cacheprovider tests/backends/test_graphs.py tests/backends/test_fused.py ;;
    mlp) $py benchmarks/fused_mlp.py --out "$out" ;;
    mlp-bwd) $py benchmarks/fused_mlp.py --backward-only --out "$out" ;;
    profile) for b in 8 256; do $py benchmarks/profile_step.py --batch "$b" --out "$out"; done ;;
    bench8) bench 8 ;;
    bench256) bench 256 ;;
    all) for s in tests mlp bench8 bench256; do bash "$0" "$s" "$out"; done ;;
    *) echo "unknown stage '$stage': tests, mlp, mlp-bwd, profile, bench8, bench256 or all" >&2; exit 2 ;;
esac
