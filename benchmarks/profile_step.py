"""Where one training iteration's GPU time goes: kernels by total device time.

    python benchmarks/profile_step.py --impl graph-fused --batch 8 [--out DIR]   # CUDA only

Builds the model as the benchmark worker does (same config, weights and seed state),
runs the training iteration eagerly (torch.profiler cannot attribute kernels inside a
CUDA-graph replay) and prints, per kernel name, its launches and device microseconds
per iteration. For comparison it also times the same iteration replayed as a CUDA
graph: the difference between the graph's time and the kernels' sum is idle GPU time.
It ends with the README's grouping of the kernels, which ``--summary JSON`` prints for a
saved profile (benchmarks/reference/profile-*.json) on any machine.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parent))

import protocol
from worker import build, train_iteration

from ncaflow.backends.graphs import GraphedIteration
from ncaflow.training.train import ROLLOUT_CHUNK

# The README's rows, by kernel name (Inductor names a kernel after the ops it fuses)
GROUPS: tuple[tuple[str, Callable[[str], bool]], ...] = (
    ("MLP backward kernel (mlp_bwd)", lambda name: name == "mlp_bwd"),
    ("MLP forward kernel (mlp_fwd)", lambda name: name == "mlp_fwd"),
    ("perception and its adjoint (Inductor kernels)", lambda name: _is_perception(name)),
    ("rows for the MLP (near-life mask, cumulative sum, row_order)", lambda n: _is_selection(n)),
)


def _is_selection(name: str) -> bool:
    """The kernels that choose and order the rows for the fused MLP: Inductor's kernel of the
    near-life mask (named after row_order, which reads it), CUB's scan of the cumulative
    sum, and row_order itself (ncaflow.backends.fused._order_op)."""
    return "row_order" in name or "DeviceScan" in name


def _is_perception(name: str) -> bool:
    """An Inductor kernel of the perception (padding, stacking the filters, their adjoint),
    not the alive mask, whose 3x3 maximum pads too."""
    if not name.startswith("triton_") or "max" in name:
        return False
    return any(op in name for op in ("pad", "stack", "select_slice_backward"))


def summary(record: dict[str, Any]) -> str:
    """The profile grouped as in the README: microseconds per step and kernel names per
    group, the rest, GPU idle time in the graph replay, and the whole step."""
    steps = record["steps"]
    left = list(record["kernels"])
    lines = [f"{'us/step':>9} {'kernels':>7}  group"]
    for label, member in GROUPS:
        mine = [k for k in left if member(k["name"])]
        left = [k for k in left if not member(k["name"])]
        lines.append(f"{sum(k['us'] for k in mine) / steps:9.1f} {len(mine):7d}  {label}")
    lines.append(f"{sum(k['us'] for k in left) / steps:9.1f} {len(left):7d}  everything else")
    idle = (record["graph_us"] - record["kernels_us"]) / steps
    lines.append(f"{idle:9.1f} {'':7}  GPU idle between kernels in the graph replay")
    lines.append(f"{record['graph_us'] / steps:9.1f} {'':7}  whole step (graph replay / steps)")
    return "\n".join(lines)


def profile_iteration(args: argparse.Namespace) -> dict[str, Any]:
    """Profile the training iteration eagerly, then time it as a graph replay."""
    device = torch.device("cuda")
    torch.backends.cuda.matmul.allow_tf32 = args.impl.endswith("-tf32")
    model = build(args.impl, device)
    x0 = torch.from_numpy(protocol.seed_state(args.state, args.batch, 72)).to(device)
    tgt = torch.from_numpy(protocol.target(args.batch, 72)).to(device)
    gen = torch.Generator(device=device).manual_seed(0)
    lr = torch.tensor(1e-3, device=device)
    opt = torch.optim.Adam(model.parameters(), lr=lr, capturable=True)
    kw = {"checkpoint_every": ROLLOUT_CHUNK} if args.impl.endswith("-ckpt") else {}
    train_step = train_iteration(model, opt, tgt, gen, **kw)

    for _ in range(2):  # compile, allocate
        train_step(args.steps, x0)
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(args.iters):
            train_step(args.steps, x0)
        torch.cuda.synchronize()
    rows = []
    for e in prof.key_averages():
        us = e.self_device_time_total / args.iters
        if us > 0:
            rows.append({"us": us, "launches": e.count / args.iters, "name": e.key})
    rows.sort(key=lambda row: -row["us"])

    params = list(model.parameters())
    run = GraphedIteration(train_step, params=params, optimizer=opt, generator=gen)
    for _ in range(3):
        run(args.steps, x0)
    times = []
    for _ in range(10):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        run(args.steps, x0)
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) * 1000)
    return {
        "impl": args.impl,
        "batch": args.batch,
        "state": args.state,
        "steps": args.steps,
        "device": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "graph_us": statistics.median(times),
        "kernels_us": sum(row["us"] for row in rows),
        "kernels": rows,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--impl", default="graph-fused")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=64)
    p.add_argument("--state", default="grown", choices=protocol.STATES)
    p.add_argument("--iters", type=int, default=3, help="profiled iterations")
    p.add_argument("--top", type=int, default=25)
    p.add_argument("--out", type=Path, default=None)
    p.add_argument(
        "--summary", type=Path, metavar="JSON", help="group a saved profile (no GPU needed)"
    )
    args = p.parse_args()
    if args.summary is not None:
        print(summary(json.loads(args.summary.read_text())))
        return
    record = profile_iteration(args)
    graph_us, total, steps = record["graph_us"], record["kernels_us"], record["steps"]
    print(f"{args.impl} batch {args.batch}, {args.state}, {steps} steps, {record['device']}")
    print(f"graph replay {graph_us:9.0f} us/iteration ({1e6 / graph_us:.1f} it/s)")
    print(f"kernels      {total:9.0f} us/iteration (eager, summed)  idle {graph_us - total:.0f}")
    print(f"{'us/step':>9} {'share':>6} {'launches/step':>13}  kernel")
    for row in record["kernels"][: args.top]:
        us, n, name = row["us"], row["launches"], row["name"]
        print(f"{us / steps:9.2f} {us / total:6.1%} {n / steps:13.2f}  {name[:110]}")
    print(summary(record))
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
        path = args.out / f"profile-{args.impl}-b{args.batch}-{args.state}-{stamp}.json"
        path.write_text(json.dumps(record, indent=1))
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
