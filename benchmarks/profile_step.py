"""Where one training iteration's GPU time goes: kernels by total device time.

    python benchmarks/profile_step.py --impl graph-fused --batch 8 [--out DIR]   # CUDA only

Builds the model as the benchmark worker does (same config, weights and seed state),
runs the training iteration eagerly (torch.profiler cannot attribute kernels inside a
CUDA-graph replay) and prints, per kernel name, its launches and device microseconds
per iteration. For comparison it also times the same iteration replayed as a CUDA
graph: the difference between the graph's time and the kernels' sum is idle GPU time.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from datetime import UTC, datetime
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parent))

import protocol
from worker import build, train_iteration

from ncaflow.graphs import GraphedIteration
from ncaflow.train import ROLLOUT_CHUNK


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--impl", default="graph-fused")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=64)
    p.add_argument("--iters", type=int, default=3, help="profiled iterations")
    p.add_argument("--top", type=int, default=25)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()
    device = torch.device("cuda")
    torch.backends.cuda.matmul.allow_tf32 = args.impl.endswith("-tf32")
    model = build(args.impl, device)
    x0 = torch.from_numpy(protocol.seed_state("grown", args.batch, 72)).to(device)
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
            rows.append((us, e.count / args.iters, e.key))
    rows.sort(reverse=True)
    total = sum(r[0] for r in rows)

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
    graph_us = statistics.median(times)

    per_step = 1.0 / args.steps
    print(f"{args.impl} batch {args.batch}, {args.steps} steps, {torch.cuda.get_device_name()}")
    print(f"graph replay {graph_us:9.0f} us/iteration ({1e6 / graph_us:.1f} it/s)")
    print(f"kernels      {total:9.0f} us/iteration (eager, summed)  idle {graph_us - total:.0f}")
    print(f"{'us/step':>9} {'share':>6} {'launches/step':>13}  kernel")
    for us, n, name in rows[: args.top]:
        print(f"{us * per_step:9.2f} {us / total:6.1%} {n * per_step:13.2f}  {name[:110]}")
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
        path = args.out / f"profile-{args.impl}-b{args.batch}-{stamp}.json"
        path.write_text(
            json.dumps(
                {
                    "impl": args.impl,
                    "batch": args.batch,
                    "steps": args.steps,
                    "device": torch.cuda.get_device_name(),
                    "torch": torch.__version__,
                    "graph_us": graph_us,
                    "kernels_us": total,
                    "kernels": [{"us": us, "launches": n, "name": name} for us, n, name in rows],
                },
                indent=1,
            )
        )
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
