"""Benchmark ncaflow against the eager baseline and the peers, side by side in one run.

    python benchmarks/run.py                 # CPU: all cases, 3 interleaved rounds
    python benchmarks/run.py --quick         # one round, grown state only, no CAX training
    python benchmarks/run.py --device cuda   # GPU: batch 8 and 256

Every measurement runs in a fresh process (so peak memory is that case's own)
and the cases are interleaved round by round, so that load from other users of
the machine spreads over all of them. The table gives medians over every timed
iteration, ratios against the baseline on the same state and batch, and peak
memory: the resident set's growth over the state before the first iteration on
CPU (torch.cuda.max_memory_allocated on GPU). JSON goes to benchmarks/results/.
The peers (ncalab, cax) run in their own virtualenvs: benchmarks/setup_peers.sh.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from protocol import STATES

HERE = Path(__file__).resolve().parent
GPU_ONLY = (
    "graph",
    "graph-fast",
    "graph-compiled",
    "graph-compiled-tf32",
    "graph-fused",
    "graph-fused-ckpt",
)
OURS = ("baseline", "reference", "ncaflow", *GPU_ONLY)
PEERS = {
    "ncalab": (HERE / ".venv-ncalab" / "bin" / "python", HERE / "peers" / "ncalab_bench.py"),
    "cax": (HERE / ".venv-cax" / "bin" / "python", HERE / "peers" / "cax_bench.py"),
}


@dataclass
class Case:
    impl: str
    mode: str
    state: str
    batch: int
    rounds: int  # how many of the rounds measure this case
    iters: int
    warmup: int = 1
    samples: list[float] = field(default_factory=list)
    mem_mb: list[float] = field(default_factory=list)
    peak_mb: list[float] = field(default_factory=list)
    error: str | None = None

    @property
    def key(self) -> tuple[str, str, int]:
        return (self.mode, self.state, self.batch)


def plan(args: argparse.Namespace) -> list[Case]:
    cuda = args.device.startswith("cuda")
    batches = args.batch or ([8, 256] if cuda else [8])
    states = args.states or (["grown"] if args.quick or cuda else list(STATES))
    impls = args.impls or [*OURS, *PEERS]
    cases = []
    for batch in batches:
        for mode in args.modes:
            for impl in impls:
                if impl == "reference" and batch > 8:
                    continue  # as the baseline; its memory grows the same way
                if impl in GPU_ONLY and not cuda:
                    continue
                if impl.endswith("-ckpt") and mode == "infer":
                    continue  # checkpointing changes training only
                for state in states:
                    if impl in PEERS and state != "grown" and not args.states:
                        continue  # dense peers cost the same on every state
                    if impl == "reference" and state != "grown" and not args.states:
                        continue
                    rounds, iters = args.rounds, args.iters
                    if impl == "cax" and mode == "train" and not cuda:
                        if args.quick:
                            continue
                        rounds, iters = 1, 1  # XLA:CPU needs minutes per iteration
                    cases.append(Case(impl, mode, state, batch, rounds, iters))
    return cases


def command(case: Case, args: argparse.Namespace) -> list[str] | str:
    """The worker's command line, or why the case cannot run here."""
    common = [
        f"--mode={case.mode}",
        f"--state={case.state}",
        f"--batch={case.batch}",
        f"--size={args.size}",
        f"--steps={args.steps}",
        f"--iters={case.iters}",
        f"--warmup={case.warmup}",
        f"--threads={args.threads}",
        f"--device={args.device}",
    ]
    if case.impl in OURS:
        return [sys.executable, str(HERE / "worker.py"), f"--impl={case.impl}", *common]
    python, script = PEERS[case.impl]
    if not python.exists():
        return f"no {python.parent.parent.name}: run benchmarks/setup_peers.sh"
    return [str(python), str(script), *common]


def run_case(case: Case, args: argparse.Namespace) -> None:
    cmd = command(case, args)
    if isinstance(cmd, str):
        case.error = cmd
        return
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    try:
        proc = subprocess.run(
            cmd, capture_output=True, text=True, env=env, timeout=args.timeout, check=False
        )
    except subprocess.TimeoutExpired:
        case.error = f"timed out after {args.timeout} s"
        return
    line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
    if line is None:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        case.error = f"exit {proc.returncode}: {tail[0][:200]}"
        return
    result = json.loads(line[len("RESULT ") :])
    if "error" in result:
        case.error = result["error"]
        return
    case.samples.extend(result["times"])
    if "gpu_peak_mb" in result:
        case.mem_mb.append(result["gpu_peak_mb"])
    else:
        case.mem_mb.append(result["rss_peak_mb"] - result["rss_base_mb"])
    case.peak_mb.append(result["rss_peak_mb"])


def startup(reps: int = 5) -> dict[str, float]:
    """Median wall time of the CLI's start-up (what every Snakemake job pays)."""
    exe = shutil.which("ncaflow")
    cli = [exe, "--help"] if exe else [sys.executable, "-m", "ncaflow.cli", "--help"]
    cmds = {
        "python -c pass": [sys.executable, "-c", "pass"],
        "import torch": [sys.executable, "-c", "import torch"],
        "import ncaflow.cli": [sys.executable, "-c", "import ncaflow.cli"],
        "ncaflow --help": cli,
        "import ncaflow.model.nca": [sys.executable, "-c", "import ncaflow.model.nca"],
    }
    out: dict[str, list[float]] = {k: [] for k in cmds}
    for _ in range(reps):
        for name, cmd in cmds.items():
            t0 = time.perf_counter()
            subprocess.run(cmd, capture_output=True, check=True)
            out[name].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in out.items()}


def table(cases: list[Case], args: argparse.Namespace) -> tuple[str, list[dict[str, Any]]]:
    base = {c.key: c for c in cases if c.impl == "baseline" and c.samples}
    cells = args.size * args.size * args.steps
    mem_name = "GPU peak MB" if args.device.startswith("cuda") else "peak +RSS MB"
    head = (
        f"| mode | state | batch | impl | s/iter | it/s | cell-steps/s | {mem_name} "
        "| speed vs baseline | memory vs baseline |"
    )
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    rows = []
    for c in cases:
        row: dict[str, Any] = {"impl": c.impl, "mode": c.mode, "state": c.state, "batch": c.batch}
        if c.error or not c.samples:
            row["error"] = c.error or "no samples"
            lines.append(
                f"| {c.mode} | {c.state} | {c.batch} | {c.impl} | n/a: {row['error']} | | | | | |"
            )
            rows.append(row)
            continue
        t = statistics.median(c.samples)
        mem = statistics.median(c.mem_mb)
        row.update(
            seconds=t,
            samples=c.samples,
            iterations_per_s=1 / t,
            cell_steps_per_s=c.batch * cells / t,
            memory_mb=mem,
            rss_peak_mb=statistics.median(c.peak_mb),
        )
        b = base.get(c.key)
        speed = mem_ratio = ""
        if b is not None:
            bt, bm = statistics.median(b.samples), statistics.median(b.mem_mb)
            row["speed_vs_baseline"] = bt / t
            row["memory_vs_baseline"] = mem / bm if bm > 0 else None
            speed = f"{bt / t:.2f}x"
            mem_ratio = f"{mem / bm:.2f}x" if bm > 0 else ""
        lines.append(
            f"| {c.mode} | {c.state} | {c.batch} | {c.impl} | {t:.3f} | {1 / t:.2f} | "
            f"{c.batch * cells / t / 1e6:.1f} M | {mem:.0f} | {speed} | {mem_ratio} |"
        )
        rows.append(row)
    return "\n".join(lines), rows


def machine(args: argparse.Namespace) -> dict[str, Any]:
    info: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "threads": args.threads,
        "load_avg": os.getloadavg(),
    }
    try:
        cpu = Path("/proc/cpuinfo").read_text()
        info["cpu"] = next(
            x.split(":", 1)[1].strip() for x in cpu.splitlines() if "model name" in x
        )
    except (OSError, StopIteration):
        info["cpu"] = platform.processor()
    probe = (
        "import torch; print(torch.__version__); "
        "print(torch.cuda.get_device_name() if torch.cuda.is_available() else '')"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=False)
    lines = [*out.stdout.splitlines(), "", ""]
    info["torch"], info["gpu"] = lines[0], lines[1]
    return info


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds (processes per case)")
    p.add_argument("--iters", type=int, default=2, help="timed iterations per process")
    p.add_argument("--size", type=int, default=72)
    p.add_argument("--steps", type=int, default=64)
    p.add_argument("--batch", type=int, action="append", help="repeatable; CPU 8, GPU 8 and 256")
    p.add_argument("--modes", nargs="+", default=["train", "infer"], choices=["train", "infer"])
    p.add_argument("--states", nargs="+", choices=STATES)
    p.add_argument("--impls", nargs="+", choices=[*OURS, *PEERS])
    p.add_argument("--quick", action="store_true", help="one round, grown state, no CAX training")
    p.add_argument("--no-startup", action="store_true", help="skip the CLI start-up timing")
    p.add_argument("--timeout", type=int, default=1800, help="seconds per measurement process")
    p.add_argument("--out", type=Path, default=HERE / "results")
    args = p.parse_args(argv)
    if args.quick:
        args.rounds = 1
    cases = plan(args)
    info = machine(args)
    print(
        f"# {info['cpu']}, {info['threads']} threads, torch {info['torch']} {info['gpu']}".rstrip()
    )
    print(
        f"# {len(cases)} cases, {args.rounds} rounds; load average {info['load_avg']}", flush=True
    )
    for r in range(args.rounds):
        for c in cases:
            if r < c.rounds and c.error is None:
                t0 = time.perf_counter()
                run_case(c, args)
                status = c.error or (
                    f"{statistics.median(c.samples):.4f} s/iter, {c.mem_mb[-1]:.0f} MB"
                )
                print(
                    f"  round {r + 1}: {c.impl:9s} {c.mode:5s} {c.state:5s} b{c.batch}: {status}"
                    f" ({time.perf_counter() - t0:.0f} s)",
                    flush=True,
                )
    info["load_avg_after"] = os.getloadavg()
    text, rows = table(cases, args)
    print()
    print(text)
    result: dict[str, Any] = {
        "machine": info,
        # the output folder relative to the repository: results get committed and shared
        "config": vars(args) | {"out": os.path.relpath(args.out, HERE.parent)},
        "rows": rows,
    }
    if not args.no_startup:
        result["startup_s"] = startup()
        print(
            "\nstart-up (median of 5, s): "
            + ", ".join(f"{k}: {v:.2f}" for k, v in result["startup_s"].items())
        )
    args.out.mkdir(parents=True, exist_ok=True)
    path = (
        args.out / f"{args.device.replace(':', '')}-{datetime.now().strftime('%Y%m%d-%H%M%S')}.json"
    )
    path.write_text(json.dumps(result, indent=1))
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
