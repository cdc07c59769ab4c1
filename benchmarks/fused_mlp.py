"""Time the update MLP alone: ncaflow.fused's Triton kernels against PyTorch's GEMMs.

    python benchmarks/fused_mlp.py [--out DIR]      # CUDA only

The growing config's MLP (48 -> 128 -> 16) on the rows of one step at batch 8 and 256
(72 x 72 cells each), forward alone and forward + backward, for PyTorch
(F.linear, TF32 allowed, as cuBLAS runs it) and for each launch configuration of
the fused kernels (rows per tile, warps, persistent programs per SM). Times are the
medians of CUDA-event timings of CUDA-graph replays (launch cost included once).
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections.abc import Callable
from dataclasses import asdict, replace
from datetime import UTC, datetime
from pathlib import Path

import torch
import torch.nn.functional as F

from ncaflow import fused


def bench(fn: Callable[[], object], reps: int = 50) -> float:
    """Median microseconds of one replay of fn captured as a CUDA graph."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        graph.replay()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) * 1000)
    return statistics.median(times)


def torch_mlp(p: torch.Tensor, w1: torch.Tensor, b1: torch.Tensor, w2: torch.Tensor):  # type: ignore[no-untyped-def]
    return F.linear(F.relu(F.linear(p, w1, b1)), w2)


def case(mlp, n: int, k_in: int, hidden: int, k_out: int, backward: bool) -> float:  # type: ignore[no-untyped-def]
    gen = torch.Generator("cuda").manual_seed(0)
    p, w1, b1, w2 = (
        torch.randn(*s, device="cuda", generator=gen).requires_grad_(backward)
        for s in ((n, k_in), (hidden, k_in), (hidden,), (k_out, hidden))
    )
    g = torch.randn(n, k_out, device="cuda", generator=gen)

    def run() -> object:
        y = mlp(p, w1, b1, w2)
        if backward:
            return torch.autograd.grad(y, [p, w1, b1, w2], g)
        return y

    with torch.no_grad() if not backward else torch.enable_grad():
        return bench(run)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = ap.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = True
    launches = (
        [fused.Launch()]
        + [
            replace(fused.Launch(), block_bwd=b, warps_bwd=w, programs_per_sm=k)
            for b, w, k in [
                (32, 4, 1),
                (64, 4, 1),
                (64, 8, 2),
                (128, 8, 1),
                (32, 4, 2),
                (128, 4, 1),
            ]
        ]
        + [
            replace(fused.Launch(), block_fwd=b, warps_fwd=w)
            for b, w in [(64, 4), (128, 8), (256, 8)]
        ]
    )
    rows = []
    for cells in (8 * 72 * 72, 256 * 72 * 72):
        for shape in ((48, 128, 16),):
            for backward in (False, True):
                t = case(torch_mlp, cells, *shape, backward)
                rows.append(
                    {"impl": "torch", "n": cells, "shape": shape, "backward": backward, "us": t}
                )
                print(
                    f"n={cells:8d} {shape} bwd={backward!s:5} torch        {t:9.1f} us", flush=True
                )
                for launch in launches:
                    fused.LAUNCH = launch
                    try:
                        t = case(fused.fused_mlp, cells, *shape, backward)
                    except Exception as e:  # a launch that does not fit (OutOfResources): a result
                        print(f"   {launch}: {type(e).__name__}: {str(e)[:120]}")
                        continue
                    rows.append(
                        {
                            "impl": "fused",
                            "launch": asdict(launch),
                            "n": cells,
                            "shape": shape,
                            "backward": backward,
                            "us": t,
                        }
                    )
                    print(
                        f"n={cells:8d} {shape} bwd={backward!s:5} fused {t:9.1f} us  {launch}",
                        flush=True,
                    )
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"fused-mlp-{datetime.now(UTC):%Y%m%d-%H%M%S}.json"
    meta = {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__}
    path.write_text(json.dumps({"machine": meta, "rows": rows}, indent=1))
    print("wrote", path)


if __name__ == "__main__":
    main()
