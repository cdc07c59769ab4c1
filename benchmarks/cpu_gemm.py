"""How much of a CPU training iteration is the update MLP's GEMMs, and how fast they run.

    python benchmarks/cpu_gemm.py [--state full] [--iters 5] [--threads 2] [--out DIR]

Trains the benchmark's growing model (``worker.build("ncaflow")``, batch 8, 72 x 72, 64
steps) on one seed state and times, per iteration, the whole iteration and the time spent
inside ``fast.mlp_forward`` and ``fast.mlp_backward`` (all of the MLP's GEMMs, tile by
tile, with the ReLU and its backward between them), with the rows they saw. Then it times
each of those GEMMs alone on one tile of random data (``fast.TILE_ROWS`` rows, the layouts
``fast`` uses), gives its GFLOP/s, and what the iteration's MLP time would be at those
rates. The first iteration (compiling perception, unless Inductor's cache has it: set
``TORCHINDUCTOR_CACHE_DIR`` to an empty folder for a cold start) is timed on its own.
Medians; JSON to --out.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import protocol
import worker

from ncaflow.backends import fast


def timed(
    fn: Callable[..., Any], spent: dict[str, float], name: str, rows_arg: int
) -> Callable[..., Any]:
    """fn, adding its wall time to spent[name] and the rows of its perception argument
    (positional rows_arg) to spent[name + "_rows"]."""

    def wrapper(*args: Any) -> Any:
        start = time.perf_counter()
        out = fn(*args)
        spent[name] = spent.get(name, 0.0) + time.perf_counter() - start
        spent[name + "_rows"] = spent.get(name + "_rows", 0.0) + args[rows_arg].shape[0]
        return out

    return wrapper


def median_us(fn: Callable[[], object], reps: int = 30) -> float:
    for _ in range(3):
        fn()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e6


def gemm_rates(rows: int, k: int, hidden: int, out: int) -> dict[str, dict[str, float]]:
    """Each GEMM of mlp_forward / mlp_backward alone on one tile: microseconds and GFLOP/s."""
    gen = torch.Generator().manual_seed(0)
    p, w1a = torch.randn(rows, k + 1, generator=gen), torch.randn(hidden, k + 1, generator=gen)
    w2, g = torch.randn(out, hidden, generator=gen), torch.randn(rows, out, generator=gen)
    h, gh = torch.randn(rows, hidden, generator=gen).relu_(), torch.empty(rows, hidden)
    gp = torch.empty(rows, k)
    gw1a, gw2, y = torch.zeros_like(w1a), torch.zeros_like(w2), torch.empty(rows, out)
    cases = {  # name: (call, multiply-adds per row)
        "p @ w1a.T": (lambda: torch.mm(p, w1a.t(), out=h), (k + 1) * hidden),
        "h @ w2.T": (lambda: torch.mm(h, w2.t(), out=y), hidden * out),
        "gw2 += g.T @ h": (lambda: gw2.addmm_(g.t(), h), hidden * out),
        "gh = g @ w2": (lambda: torch.mm(g, w2, out=gh), hidden * out),
        "gw1a += gh.T @ p": (lambda: gw1a.addmm_(gh.t(), p), (k + 1) * hidden),
        "gp = gh @ w1": (lambda: torch.mm(gh, w1a[:, :-1], out=gp), k * hidden),
    }
    result = {}
    for name, (call, macs) in cases.items():
        us = median_us(call)
        result[name] = {"us": us, "gflops": 2 * macs * rows / us / 1e3, "macs_per_row": macs}
    return result


def gemms_in_situ(
    iteration: Callable[[], object], rows: dict[str, float], rates: dict[str, dict[str, float]]
) -> dict[str, float]:
    """One iteration under torch.profiler: its wall time, the self time of every aten::mm
    and aten::addmm_ (all of them are the MLP's), their FLOPs from the rows the MLP saw, and
    the rate."""
    from torch.profiler import ProfilerActivity, profile

    macs = {name: r["macs_per_row"] for name, r in rates.items()}
    fwd = macs["p @ w1a.T"] + macs["h @ w2.T"]
    bwd = sum(macs.values()) - macs["h @ w2.T"]  # the hidden layer recomputed, then 4 GEMMs
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        start = time.perf_counter()
        iteration()
        wall = time.perf_counter() - start
    spent = sum(
        e.self_cpu_time_total for e in prof.key_averages() if e.key in ("aten::mm", "aten::addmm_")
    )
    gflop = 2 * (rows["forward"] * fwd + rows["backward"] * bwd) / 1e9
    return {"iteration_s": wall, "s": spent / 1e6, "gflop": gflop, "gflops": gflop / (spent / 1e6)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--state", choices=protocol.STATES, default="full")
    ap.add_argument("--iters", type=int, default=5, help="timed iterations after the first two")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tile", type=int, default=fast.TILE_ROWS, help="rows per GEMM tile")
    ap.add_argument(
        "--profile", action="store_true", help="also profile one iteration: GEMM rate in situ"
    )
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    fast.TILE_ROWS = args.tile  # read when the model's workspace is made
    size, batch, steps = 72, 8, 64
    model = worker.build("ncaflow", torch.device("cpu"))
    x0 = torch.from_numpy(protocol.seed_state(args.state, batch, size))
    tgt = torch.from_numpy(protocol.target(batch, size))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    step = worker.train_iteration(model, opt, tgt, torch.Generator().manual_seed(0))

    start = time.perf_counter()
    step(steps, x0)
    first = time.perf_counter() - start
    step(steps, x0)
    spent: dict[str, float] = {}
    fwd, bwd = fast.mlp_forward, fast.mlp_backward
    fast.mlp_forward = timed(fwd, spent, "forward", 1)  # (ws, p, w1a, w2, out)
    fast.mlp_backward = timed(bwd, spent, "backward", 2)  # (ws, gdx, p, w1a, w2, gp)
    try:
        iters = []
        for _ in range(args.iters):
            start = time.perf_counter()
            step(steps, x0)
            iters.append(time.perf_counter() - start)
    finally:
        fast.mlp_forward, fast.mlp_backward = fwd, bwd
    n = args.iters
    k = model.n_filters * protocol.CHANNELS
    rates = gemm_rates(fast.TILE_ROWS, k, protocol.HIDDEN, protocol.CHANNELS)
    fwd_us = rates["p @ w1a.T"]["us"] + rates["h @ w2.T"]["us"]
    bwd_us = sum(r["us"] for r in rates.values()) - rates["h @ w2.T"]["us"]  # h recomputed
    rows = {s: spent[s + "_rows"] / n for s in ("forward", "backward")}
    mlp = {s: spent[s] / n for s in ("forward", "backward")}
    ideal = {
        "forward": rows["forward"] / fast.TILE_ROWS * fwd_us / 1e6,
        "backward": rows["backward"] / fast.TILE_ROWS * bwd_us / 1e6,
    }
    iteration = statistics.median(iters)
    in_situ = gemms_in_situ(lambda: step(steps, x0), rows, rates) if args.profile else None
    record = {
        "state": args.state,
        "threads": args.threads,
        "tile_rows": fast.TILE_ROWS,
        "first_iteration_s": first,
        "iteration_s": iteration,
        "mlp_s": mlp,
        "mlp_rows_per_iteration": rows,
        "gemms_alone": rates,
        "mlp_s_at_those_rates": ideal,
        "gemms_in_situ": in_situ,
        "torch": torch.__version__,
    }
    total = sum(mlp.values())
    print(f"first iteration {first:.1f} s; then {iteration:.3f} s/iteration")
    print(
        f"MLP GEMMs: {total:.3f} s an iteration ({total / iteration:.0%}), "
        f"{sum(ideal.values()):.3f} s at the rates alone"
    )
    for name, r in rates.items():
        print(f"  {name:18} {r['us']:7.0f} us  {r['gflops']:6.1f} GFLOP/s  ({fast.TILE_ROWS} rows)")
    if in_situ is not None:
        print(
            f"in situ (torch.profiler, one iteration): aten::mm + aten::addmm_ {in_situ['s']:.3f} s"
            f" for {in_situ['gflop']:.1f} GFLOP = {in_situ['gflops']:.0f} GFLOP/s"
        )
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"cpu-gemm-{args.state}-{datetime.now(UTC):%Y%m%d-%H%M%S}.json"
    path.write_text(json.dumps(record, indent=1))
    print("wrote", path)


if __name__ == "__main__":
    main()
