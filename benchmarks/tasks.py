"""Each run config's real training iteration, in cell-steps/s, beside the growing kernel's rate.

    python benchmarks/tasks.py --device cuda                 # the four run configs, B=config, 256
    python benchmarks/tasks.py --tiny --big-batch 4 ...      # the test config's sizes (CPU test)

For each run config (growing, selfclass, breastmnist, kvasir) and each batch (the config's
own, then --big-batch) this builds the run exactly as `ncaflow train` does (model, task with
its data, optimiser, scheduler, CUDA graphs where the trainer uses them) and times the
trainer's iteration: the task's batch sampling (data pipeline and augmentation), the graphed
rollout + readout + loss + backward + optimiser step, the scheduler and the task's
after_step (growing: the pool write-back), and the loss's way to the host for the NaN check
(ncaflow.training.readback: on CUDA read one iteration late, so that the host queues the
next iteration while the GPU still runs this one). Evaluation, TensorBoard and checkpoints
are left out. The rollout length is fixed at the middle of the config's train.steps range,
so that one CUDA graph is captured in the warm-up (a training run captures one per length,
once).

cell-steps/s = batch x H x W x rollout steps / seconds per iteration, the iterations timed
back to back as the trainer runs them (`samples` keeps each iteration timed alone, start to
the GPU's end: its latency); beside it, in the same
run, the growing kernel (benchmarks/worker.py --impl graph-fused on CUDA, --impl ncaflow on
CPU; grown state) at --kernel-batch, and the kernel's batch-8 training rate (issue 34).

Where the time goes (per iteration, means over the timed iterations): host seconds in each
phase (sample, the graphed iteration's launch, scheduler + after_step, loss readback),
and on CUDA the device time of the sample's and of the graph's work (CUDA events). A
torch.profiler table of the top operators by host time, over a few iterations with the
phases labelled, goes into the JSON too, and on CUDA the kernels by device time with their
launches per iteration (a CUDA-graph replay hides its kernels from the profiler: pass
`--set train.cuda_graphs=false` to see them, `gpu_check.sh tasks-kernels`). The JSON goes to
--out (default benchmarks/results).
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from torch.profiler import ProfilerActivity, profile, record_function

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

from ncaflow.backends import fused  # noqa: E402
from ncaflow.config import RunConfig, read_yaml  # noqa: E402
from ncaflow.tasks.runconfig import load_config  # noqa: E402
from ncaflow.training.readback import LossReadback  # noqa: E402
from ncaflow.training.train import _graphed_iteration, _setup, select_device  # noqa: E402

# run config -> (file, the task's name in .test/config/config.yaml)
TASKS = {
    "growing": ("config/runs/growing.yaml", "growing"),
    "selfclass": ("config/runs/selfclass.yaml", "selfclass"),
    "breastmnist": ("config/runs/breastmnist.yaml", "medmnist"),
    "kvasir": ("config/runs/kvasir.yaml", "kvasir"),
}
PHASES = ("sample", "graphed iteration", "scheduler + after_step", "loss readback")


def run_config(name: str, *, batch: int, device: str, tiny: bool, extra: list[str]) -> RunConfig:
    """The task's run config at ``batch``, with .test/config/config.yaml's overrides if ``tiny``."""
    path, tiny_name = TASKS[name]
    sets: list[str] = []
    if tiny:
        tiny_cfg = read_yaml(REPO / ".test" / "config" / "config.yaml")["tasks"][tiny_name]
        sets += [f"{k}={json.dumps(v)}" for k, v in tiny_cfg.get("set", {}).items()]
    cfg = load_config(REPO / path, sets)
    lo, hi = cfg.train.steps[0], cfg.train.steps[-1]
    mid = (lo + hi) // 2
    pool = []  # growing: a pool at least as large as the batch
    if cfg.task == "growing":
        pool = [f"data.pool_size={max(batch, getattr(cfg.data, 'pool_size', batch))}"]
    return load_config(
        REPO / path,
        [
            *sets,
            f"train.batch_size={batch}",
            f"train.steps=[{mid}, {mid}]",
            f"train.device={device}",
            "train.progress=false",
            *pool,
            *extra,
        ],
    )


def measure_task(
    cfg: RunConfig, *, iters: int, warmup: int, profile_iters: int, workdir: Path
) -> dict[str, Any]:
    """Time the trainer's iteration of ``cfg``; see the module docstring."""
    device = select_device(cfg.train.device)
    cuda = device.type == "cuda"
    t0 = time.perf_counter()
    run = _setup(cfg, workdir, device, "auto", None)
    setup_s = time.perf_counter() - t0
    graphed = _graphed_iteration(run)
    readback = LossReadback(device=device)
    task, steps = run.task, cfg.train.steps[0]
    phases: dict[str, list[float]] = {p: [] for p in PHASES}
    gpu: dict[str, list[float]] = {"sample": [], "graphed iteration": []}
    shape: list[int] = []

    def event() -> torch.cuda.Event:
        return torch.cuda.Event(enable_timing=True)

    def iteration(record: bool) -> None:
        run.model.train()
        t = [time.perf_counter()]
        ev = [event() for _ in range(3)] if cuda and record else []
        if ev:
            ev[0].record()
        with record_function("sample"):
            batch = task.sample(run.data_gen)
        t.append(time.perf_counter())
        if ev:
            ev[1].record()
        with record_function("graphed iteration"):
            losses, final = graphed(steps, batch.state, batch.target, batch.mask)
        t.append(time.perf_counter())
        if ev:
            ev[2].record()
        with record_function("scheduler + after_step"):
            run.sched.step()
            task.after_step(batch, final, losses)
        t.append(time.perf_counter())
        with record_function("loss readback"):  # as the trainer: one iteration late on CUDA
            readback.push(0, losses, 0.0)
            for _, loss, _ in readback.ready():
                if not math.isfinite(loss):
                    raise RuntimeError(f"{cfg.name}: loss became {loss}")
        t.append(time.perf_counter())
        shape[:] = list(batch.state.shape)
        if record:
            for p, a, b in zip(PHASES, t, t[1:], strict=False):
                phases[p].append(b - a)
            if ev:
                ev[2].synchronize()
                gpu["sample"].append(ev[0].elapsed_time(ev[1]) / 1e3)
                gpu["graphed iteration"].append(ev[1].elapsed_time(ev[2]) / 1e3)

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize(device)

    t0 = time.perf_counter()
    for _ in range(warmup):  # compilation, CUDA-graph capture
        iteration(record=False)
    sync()
    warmup_s = time.perf_counter() - t0
    walls = []  # one iteration alone, from its start to the GPU's end of it: the latency
    for _ in range(iters):
        t0 = time.perf_counter()
        iteration(record=True)
        sync()
        walls.append(time.perf_counter() - t0)
    t0 = time.perf_counter()  # back to back, as the trainer runs them: the throughput
    for _ in range(iters):
        iteration(record=False)
    sync()
    wall = (time.perf_counter() - t0) / iters
    b, _, h, w = shape
    result: dict[str, Any] = {
        "task": cfg.task,
        "name": cfg.name,
        "batch": b,
        "grid": [h, w],
        "steps": steps,
        "cuda_graphs": run.use_graphs,
        "impl": type(run.model).__name__ + ":" + str(getattr(run.model, "impl", "")),
        "setup_s": setup_s,
        "warmup_s": warmup_s,
        "seconds": wall,
        "samples": walls,
        "iterations_per_s": 1 / wall,
        "cell_steps_per_s": b * h * w * steps / wall,
        "host_s": {p: statistics.mean(v) for p, v in phases.items()},
    }
    if cuda:
        result["gpu_s"] = {p: statistics.mean(v) for p, v in gpu.items()}
        busy = sum(result["gpu_s"].values())
        result["gpu_busy_fraction"] = busy / statistics.mean(walls)
        result["gpu_peak_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    if profile_iters:
        acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
        with profile(activities=acts) as prof:
            for _ in range(profile_iters):
                iteration(record=False)
            sync()
        result["profile"] = profile_table(prof, profile_iters)
    return result


def profile_table(prof: profile, n: int) -> dict[str, Any]:
    """The phases' host time and the top operators by host time, per iteration (us)."""
    events = prof.key_averages()
    rows = []
    for e in events:
        dev = getattr(e, "device_time_total", 0.0)
        rows.append(
            {
                "name": e.key,
                "calls": e.count / n,
                "cpu_total_us": e.cpu_time_total / n,
                "self_cpu_us": e.self_cpu_time_total / n,
                "device_total_us": dev / n,
            }
        )
    phases = {r["name"]: r["cpu_total_us"] for r in rows if r["name"] in PHASES}
    top = sorted((r for r in rows if r["name"] not in PHASES), key=lambda r: -r["self_cpu_us"])[:25]
    on_device = [
        e
        for e in events
        if getattr(e, "device_type", None) is not None and "CUDA" in str(e.device_type)
    ]

    def device_us(e: Any) -> float:
        return float(getattr(e, "self_device_time_total", 0.0))

    # kernel by kernel (seen only outside CUDA-graph replays: --set train.cuda_graphs=false)
    top_kernels = [
        {"name": e.key, "launches": e.count / n, "device_us": device_us(e) / n}
        for e in sorted(on_device, key=device_us, reverse=True)[:25]
        if device_us(e) > 0
    ]
    return {
        "iterations": n,
        "phases_cpu_us": phases,
        "top_ops": top,
        "kernels_seen_us": sum(device_us(e) for e in on_device) / n,
        "kernel_launches": sum(e.count for e in on_device) / n,
        "top_kernels": top_kernels,
    }


def kernel_rate(args: argparse.Namespace, batch: int) -> dict[str, Any]:
    """The growing kernel's training rate in a fresh worker process (as benchmarks/run.py)."""
    impl = args.kernel_impl or ("graph-fused" if args.device.startswith("cuda") else "ncaflow")
    cmd = [
        sys.executable, str(HERE / "worker.py"), f"--impl={impl}", "--mode=train",
        "--state=grown", f"--batch={batch}", f"--size={args.kernel_size}",
        f"--steps={args.kernel_steps}", f"--iters={args.kernel_iters}", "--warmup=2",
        f"--device={args.device}", "--threads=1",
    ]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=1800)
    line = next((x for x in done.stdout.splitlines() if x.startswith("RESULT ")), None)
    if line is None:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        return {"impl": impl, "batch": batch, "error": f"exit {done.returncode}: {tail[0][:300]}"}
    res = json.loads(line[len("RESULT ") :])
    if "error" in res:
        return {"impl": impl, "batch": batch, "error": res["error"]}
    t = statistics.median(res["times"])
    cells = batch * args.kernel_size**2 * args.kernel_steps
    return {
        "impl": impl,
        "batch": batch,
        "grid": [args.kernel_size, args.kernel_size],
        "steps": args.kernel_steps,
        "seconds": t,
        "iterations_per_s": 1 / t,
        "cell_steps_per_s": cells / t,
        "gpu_peak_mb": res.get("gpu_peak_mb"),
    }


def fmt_row(r: dict[str, Any], kernel: float | None) -> str:
    if "error" in r:
        return f"| {r['config']} | {r['batch_asked']} | n/a: {r['error']} | | | | |"
    host = r["host_s"]
    split = ", ".join(f"{k} {v * 1e3:.2f}" for k, v in host.items())
    ratio = f"{r['cell_steps_per_s'] / kernel:.2f}" if kernel else ""
    busy = f"{r['gpu_busy_fraction']:.2f}" if "gpu_busy_fraction" in r else ""
    return (
        f"| {r['config']} | {r['batch']} | {r['iterations_per_s']:.1f} | "
        f"{r['cell_steps_per_s'] / 1e6:.1f} M | {ratio} | {busy} | {split} |"
    )


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--device", default="cpu")
    p.add_argument("--tasks", nargs="+", choices=list(TASKS), default=list(TASKS))
    p.add_argument("--big-batch", type=int, default=256, help="the second batch (0: none)")
    p.add_argument("--iters", type=int, default=20, help="timed iterations per case")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--profile-iters", type=int, default=5, help="iterations profiled (0: none)")
    p.add_argument(
        "--tiny", action="store_true", help=".test/config/config.yaml's per-task overrides"
    )
    p.add_argument("--set", action="append", default=[], help="override for every task")
    p.add_argument("--kernel-impl", help="worker.py --impl (default: graph-fused on CUDA)")
    p.add_argument("--kernel-batch", type=int, default=256)
    p.add_argument("--kernel-size", type=int, default=72)
    p.add_argument("--kernel-steps", type=int, default=64)
    p.add_argument("--kernel-iters", type=int, default=20)
    p.add_argument("--no-kernel", action="store_true", help="skip the kernel's rate")
    p.add_argument(
        "--on-chip", type=int, help="fused.ON_CHIP for this run (a trial of a larger MLP limit)"
    )
    p.add_argument("--out", type=Path, default=HERE / "results")
    p.add_argument("--name", help="output file name (default tasks-<device>-<time>.json)")
    args = p.parse_args(argv)
    if args.on_chip:
        fused.ON_CHIP = args.on_chip
    cuda = args.device.startswith("cuda")
    info: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "gpu": torch.cuda.get_device_name() if cuda else "",
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
    }
    print(f"# {info['gpu'] or platform.processor() or 'cpu'}, torch {info['torch']}", flush=True)
    kernel: dict[str, Any] = {}
    b8: dict[str, Any] = {}
    if not args.no_kernel:
        kernel = kernel_rate(args, args.kernel_batch)
        print(f"# kernel B{args.kernel_batch}: {kernel}", flush=True)
        b8 = kernel_rate(args, 8)
        print(f"# kernel B8: {b8}", flush=True)
    rate = kernel.get("cell_steps_per_s")
    rows: list[dict[str, Any]] = []
    args.out.mkdir(parents=True, exist_ok=True)
    name = args.name or f"tasks-{args.device.replace(':', '')}-{datetime.now():%Y%m%d-%H%M%S}.json"
    path = args.out / name

    def save() -> None:  # after every case, so that a time limit keeps what was measured
        result = {
            "machine": info,
            "config": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
            "kernel": kernel,
            "growing_b8_kernel": b8,
            "growing_b8_train_it_per_s": b8.get("iterations_per_s"),
            "rows": rows,
        }
        path.write_text(json.dumps(result, indent=1))

    for task_name in args.tasks:
        batches = [_config_batch(task_name, args)]
        if args.big_batch and args.big_batch not in batches:
            batches.append(args.big_batch)
        for batch in batches:
            row: dict[str, Any] = {"config": task_name, "batch_asked": batch}
            try:
                cfg = run_config(
                    task_name, batch=batch, device=args.device, tiny=args.tiny, extra=args.set
                )
                with tempfile.TemporaryDirectory() as tmp:
                    row |= measure_task(
                        cfg,
                        iters=args.iters,
                        warmup=args.warmup,
                        profile_iters=args.profile_iters,
                        workdir=Path(tmp),
                    )
            except (RuntimeError, OSError, ValueError) as err:  # e.g. out of memory
                row["error"] = f"{type(err).__name__}: {str(err).splitlines()[0][:300]}"
            if rate and "cell_steps_per_s" in row:
                row["kernel_cell_steps_per_s"] = rate
                row["ratio_to_kernel"] = row["cell_steps_per_s"] / rate
            rows.append(row)
            save()
            print(fmt_row(row, rate), flush=True)
            if cuda:
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats()
    print()
    print(
        "| config | batch | it/s | cell-steps/s | vs kernel | GPU busy | host ms: "
        + ", ".join(PHASES)
        + " |"
    )
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        print(fmt_row(row, rate))
    save()
    print(f"\nwrote {path}")


def _config_batch(name: str, args: argparse.Namespace) -> int:
    """The run config's own train.batch_size (after --tiny and --set)."""
    path, tiny_name = TASKS[name]
    sets: list[str] = []
    if args.tiny:
        tiny_cfg = read_yaml(REPO / ".test" / "config" / "config.yaml")["tasks"][tiny_name]
        sets += [f"{k}={json.dumps(v)}" for k, v in tiny_cfg.get("set", {}).items()]
    return load_config(REPO / path, [*sets, *args.set]).train.batch_size


if __name__ == "__main__":
    main()
