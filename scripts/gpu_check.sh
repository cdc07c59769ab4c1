#!/usr/bin/env bash
# On a CUDA machine: the GPU-only tests, the fused MLP kernels alone, then the GPU benchmark
# (tables in the README), in stages that each should fit a 10-minute call (a benchmark case
# took 26-34 s on an H200, most of it torch.compile and Triton compiling):
#
#   bash scripts/gpu_check.sh [STAGE] [OUT_DIR]
#
#   tests     tests/backends/test_graphs.py (CUDA graphs == eager, graphed training == eager, resume),
#             tests/backends/test_fused.py (Triton kernels == PyTorch, on the GPU in full fp32),
#             tests/tasks/test_transfer.py and tests/training/test_readback.py (no batch draw
#             waits for the GPU; the loss is read one iteration late)
#   mlp       benchmarks/fused_mlp.py: the MLP kernels' launch configurations
#   mlp-bwd   the same, forward + backward only
#   mlp-tasks the same for the BreastMNIST and self-classifying MNIST run configs' MLPs
#             (75 -> 96 -> 24, 90 -> 128 -> 29, 128 x 128 padded) at their rows a step
#             (28 x 28 at batch 16 and 256): the kernels against cuBLAS
#   profile   benchmarks/profile_step.py: graph-fused's kernels at batch 8 and 256
#   bench8    benchmarks/run.py --device cuda at batch 8, training and inference (9 cases)
#   bench256  the same at batch 256
#   peers     benchmarks/run.py with the peers (NCALab, CAX) beside the baseline and graph-fused,
#             batch 8 and 256 (set them up first: benchmarks/setup_peers.sh, or offline
#             benchmarks/setup_peers_offline.sh)
#   tasks     benchmarks/tasks.py: every run config's real training iteration at its batch and
#             at 256, beside the growing kernel's rate (issue 34)
#   tasks-kernels  the same without CUDA graphs (BreastMNIST, selfclass, growing), so that the
#             profile shows each kernel's device time and launches per iteration
#   sweep     benchmarks/grid.py: K = 1, 2, 4, 8, 16 BreastMNIST paper-grid jobs at once, without
#             and with CUDA MPS (ITERATIONS per job, default 300; stops starting new K after
#             SWEEP_BUDGET seconds, default 270)
#   grid      benchmarks/grid.py: the 40 BreastMNIST paper-grid jobs one at a time, then packed
#             (JOBS_PER_GPU at once, default 8, MPS unless MPS=0), and the grid record (issue 27)
#   grid-together  the same 40 jobs with each grid cell's folds trained in turn in one process
#             (`fold_jobs: together`; JOBS_PER_GPU such processes at once, default 8; ITERATIONS
#             default 1000), then the first of them one at a time (ALONE_DEADLINE s, default
#             100), and the grid record (issue 27)
#             ITERATIONS=0 runs every job at its config's length
#   recipes   benchmarks/recipes.py: the BreastMNIST recipe variants of the main job's cell, 4
#             seeds each (a variant's seeds in turn in one process, JOBS_PER_GPU processes at
#             once, default 16, MPS), and their validation summary (issue 32)
#   all       tests, mlp, bench8, bench256 in turn (the default)
#
# JSON goes to OUT_DIR (default benchmarks/results).
set -euo pipefail
cd "$(dirname "$0")/.."
stage=${1:-all}
out=${2:-benchmarks/results}
py=${PYTHON:-python3}                        # the interpreter that has torch with CUDA
export PYTHONPATH="src${PYTHONPATH:+:$PYTHONPATH}"  # runs from the checkout, installed or not
$py -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA device')"
jobs=benchmarks/reference/grid-jobs-breastmnist.json   # benchmarks/grid.py plan
gpu() {  # a short name of the GPU for file names: h100, h200
    nvidia-smi --query-gpu=name --format=csv,noheader | head -1 | grep -oiE 'h100|h200|a100|l40s' \
        | tr 'A-Z' 'a-z' || echo gpu
}
length_note() {  # what ITERATIONS did to the jobs
    if [ "$1" = 0 ]; then echo "every job at its config's length (3000 iterations, early stopping on)"
    else echo "train.iterations=$1 for every job (config: 3000), packed and alone alike"; fi
}
bench() {
    $py benchmarks/run.py --device cuda --rounds 1 --iters 10 --no-startup --out "$out" \
        --batch "$1" --impls baseline graph graph-compiled-tf32 graph-fused graph-fused-ckpt
}
case $stage in
    tests) $py -m pytest -n 4 -q -rf --tb=short -p no:cacheprovider tests/backends/test_graphs.py \
        tests/backends/test_fused.py tests/tasks/test_transfer.py tests/training/test_readback.py ;;
    mlp) $py benchmarks/fused_mlp.py --out "$out" ;;
    mlp-bwd) $py benchmarks/fused_mlp.py --backward-only --out "$out" ;;
    mlp-tasks) $py benchmarks/fused_mlp.py --shape 75 96 24 --shape 90 128 29 \
        --cells $((16 * 28 * 28)) $((256 * 28 * 28)) --out "$out" ;;
    profile) for b in 8 256; do $py benchmarks/profile_step.py --batch "$b" --out "$out"; done ;;
    bench8) bench 8 ;;
    bench256) bench 256 ;;
    peers) $py benchmarks/run.py --device cuda --rounds 1 --iters 3 --no-startup --out "$out" \
        --timeout 120 --impls baseline graph-fused ncalab cax ;;
    tasks) $py benchmarks/tasks.py --device cuda --iters 10 --warmup 2 --profile-iters 3 \
        --kernel-iters 10 --out "$out" \
        --name "tasks-$(date +%Y%m%d)-$(gpu).json" ;;
    tasks-kernels) $py benchmarks/tasks.py --device cuda --tasks breastmnist selfclass growing \
        --set train.cuda_graphs=false --iters 5 --warmup 2 --profile-iters 3 --no-kernel \
        --out "$out" --name "tasks-kernels-$(date +%Y%m%d)-$(gpu).json" ;;
    sweep)
        t0=$SECONDS
        for m in 0 1; do for k in 1 2 4 8 16; do
            [ $((SECONDS - t0)) -lt "${SWEEP_BUDGET:-270}" ] || continue
            $py benchmarks/grid.py run --jobs "$jobs" --limit "$k" --concurrency "$k" \
                --iterations "${ITERATIONS:-300}" $([ $m = 1 ] && echo --mps) \
                --out "$out/sweep-k$k-mps$m.json"
        done; done ;;
    grid)
        k=${JOBS_PER_GPU:-8} it=${ITERATIONS:-300} mps=$([ "${MPS:-1}" = 1 ] && echo --mps)
        $py benchmarks/grid.py run --jobs "$jobs" --limit 1 --iterations "$it" --out "$out/warm.json"
        $py benchmarks/grid.py run --jobs "$jobs" --concurrency "$k" --iterations "$it" $mps \
            --out "$out/grid-packed.json"
        $py benchmarks/grid.py run --jobs "$jobs" --concurrency 1 --iterations "$it" \
            --deadline "${ALONE_DEADLINE:-0}" --out "$out/grid-alone.json"
        $py benchmarks/grid.py record --packed "$out/grid-packed.json" \
            --baseline "$out/grid-alone.json" \
            --note "$(length_note "$it")" --out "$out/grid-$(date +%Y%m%d)-$(gpu).json" ;;
    grid-together)
        k=${JOBS_PER_GPU:-8} it=${ITERATIONS:-1000} mps=$([ "${MPS:-1}" = 1 ] && echo --mps)
        $py benchmarks/grid.py run --jobs "$jobs" --limit 1 --iterations "$it" --out "$out/warm.json"
        $py benchmarks/grid.py run --jobs "$jobs" --together --concurrency "$k" --iterations "$it" \
            $mps --root "$out/together-run" --out "$out/grid-together.json"
        $py benchmarks/grid.py run --jobs "$jobs" --concurrency 1 --iterations "$it" \
            --deadline "${ALONE_DEADLINE:-100}" --root "$out/alone-run" --out "$out/grid-alone.json"
        $py benchmarks/grid.py record --packed "$out/grid-together.json" \
            --baseline "$out/grid-alone.json" \
            --note "$(length_note "$it")" --out "$out/grid-together-$(date +%Y%m%d)-$(gpu).json" ;;
    recipes)
        rjobs=${RECIPES:-benchmarks/reference/recipes-breastmnist-jobs.json}  # benchmarks/recipes.py plan
        $py benchmarks/grid.py run --jobs "$rjobs" --together --concurrency "${JOBS_PER_GPU:-16}" \
            --mps --root "$out/recipes-run" --out "$out/recipes-run.json"
        $py benchmarks/recipes.py summary --root "$out/recipes-run" \
            --out "$out/$(basename "${rjobs%-jobs.json}")-$(date +%Y%m%d)-$(gpu).json" ;;
    all) for s in tests mlp bench8 bench256; do bash "$0" "$s" "$out"; done ;;
    *) echo "unknown stage '$stage': tests, mlp, mlp-bwd, mlp-tasks, profile, bench8, bench256, peers, tasks, tasks-kernels, sweep, grid, grid-together, recipes or all" >&2; exit 2 ;;
esac
