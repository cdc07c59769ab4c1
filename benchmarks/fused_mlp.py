"""Time the update MLP alone: ncaflow.backends.fused's Triton kernels against PyTorch's GEMMs.

    python benchmarks/fused_mlp.py [--out DIR]      # CUDA only
    python benchmarks/fused_mlp.py --backward-only --shape 75 96 24 --cells 200704

The growing config's MLP (48 -> 128 -> 16; or each --shape K_IN HIDDEN K_OUT) on the rows of
one step at batch 8 and 256 (72 x 72 cells each; or --cells, e.g. 256 x 28 x 28 = 200,704 for
the MNIST-sized tasks at batch 256), forward alone and forward + backward, for
PyTorch
(F.linear, TF32 allowed, as cuBLAS runs it) and for each launch configuration of
the fused kernels (rows per tile, warps, persistent programs per SM). Times are the
medians of CUDA-event timings of CUDA-graph replays (launch cost included once). --on-chip
raises fused.ON_CHIP (the padded K_in x hidden the kernels take) for this run, to find out
whether a larger MLP fits: a launch that does not is printed and left out, not fatal.
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

from ncaflow.backends import fused

SHAPE = (48, 128, 16)  # the growing config's MLP: K_in -> hidden -> K_out


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


Tensor = torch.Tensor
MLP = Callable[[Tensor, Tensor, Tensor, Tensor], Tensor]


def torch_mlp(p: Tensor, w1: Tensor, b1: Tensor, w2: Tensor) -> Tensor:
    return F.linear(F.relu(F.linear(p, w1, b1)), w2)


def case(mlp: MLP, n: int, k_in: int, hidden: int, k_out: int, backward: bool) -> float:
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
    ap.add_argument("--backward-only", action="store_true", help="only forward + backward")
    ap.add_argument(
        "--shape", nargs=3, type=int, action="append", metavar=("K_IN", "HIDDEN", "K_OUT")
    )
    ap.add_argument("--on-chip", type=int, help="fused.ON_CHIP for this run")
    ap.add_argument(
        "--cells", nargs="+", type=int, default=[8 * 72 * 72, 256 * 72 * 72], help="rows a step"
    )
    args = ap.parse_args()
    shapes = [tuple(s) for s in args.shape] if args.shape else [SHAPE]
    if args.on_chip:
        fused.ON_CHIP = args.on_chip
    if not torch.cuda.is_available():
        raise SystemExit("benchmarks/fused_mlp.py times CUDA kernels: no CUDA device here")
    torch.backends.cuda.matmul.allow_tf32 = True
    default = fused.Launch()  # first: the defaults, then one change of them at a time
    fwd = [(64, 4), (128, 4), (256, 8), (64, 8), (32, 4)]
    bwd = [(64, 4, 1), (64, 8, 1), (64, 8, 2), (128, 8, 1), (32, 4, 2), (128, 4, 1)]
    bwd += [(32, 8, 1), (32, 16, 1), (16, 4, 1), (16, 8, 1), (32, 8, 2)]
    fwd_launches = [default] + [replace(default, block_fwd=b, warps_fwd=w) for b, w in fwd]
    bwd_launches = [  # every MLP size takes the warps tried (warps_bwd_large too)
        replace(default, block_bwd=b, warps_bwd=w, warps_bwd_large=w, programs_per_sm=k)
        for b, w, k in bwd
    ]
    rows: list[dict[str, object]] = []

    def record(
        impl: str,
        shape: tuple[int, ...],
        cells: int,
        backward: bool,
        us: float,
        launch: fused.Launch | None = None,
    ) -> None:
        row = {"impl": impl, "n": cells, "shape": shape, "backward": backward, "us": us}
        rows.append(row if launch is None else {**row, "launch": asdict(launch)})
        print(
            f"{shape} n={cells:8d} bwd={backward!s:5} {impl:5} {us:9.1f} us  {launch or ''}",
            flush=True,
        )

    for shape in shapes:
        for cells in args.cells:
            for backward in (True,) if args.backward_only else (False, True):
                record("torch", shape, cells, backward, case(torch_mlp, cells, *shape, backward))
                # the backward's settings change nothing in a forward pass
                for launch in fwd_launches + (bwd_launches if backward else []):
                    fused.LAUNCH = launch
                    try:
                        us = case(fused.fused_mlp, cells, *shape, backward)
                    except Exception as e:  # a launch that does not fit (OutOfResources)
                        print(f"   {shape} {launch}: {type(e).__name__}: {str(e)[:120]}")
                        continue
                    record("fused", shape, cells, backward, us, launch)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"fused-mlp-{datetime.now(UTC):%Y%m%d-%H%M%S}.json"
    meta = {
        "gpu": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "on_chip": fused.ON_CHIP,
    }
    path.write_text(json.dumps({"machine": meta, "rows": rows}, indent=1))
    print("wrote", path)


if __name__ == "__main__":
    main()
