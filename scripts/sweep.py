"""Train variants of one run config in parallel, evaluate them, pick one by validation.

    python scripts/sweep.py --grid sweeps/breastmnist.yaml --out runs/sweep --jobs 12

The grid file names a base run config, the seeds and the variants (each a list of
``key.sub=value`` overrides, as ``ncaflow train --set`` takes them)::

    config: config/runs/breastmnist.yaml
    seeds: [0, 1, 2]
    select: {metric: val_acc, mode: max, tie: val_auc}
    common: [train.iterations=4000]          # applied to every variant
    variants:
      base: []
      wide: [model.hidden_channels=32, model.hidden_width=128]

Every variant x seed trains into ``OUT/<variant>-s<seed>/`` (resuming if it was
interrupted) and is evaluated on val and test. The variant with the best mean
validation metric over its seeds is selected -- the test split never takes part
in the choice -- and ``OUT/summary.json`` / ``summary.md`` list every run, the
per-variant means and standard deviations, and the selection. With ``--deadline``
the runs still going at that time are interrupted (their checkpoints stay, so the
same command resumes them) and left out of the summary.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO, Any

import yaml

ROOT = Path(__file__).resolve().parent.parent


CLI = [sys.executable, "-m", "ncaflow.cli"]
STOP = threading.Event()  # set at the deadline: running jobs get SIGINT, queued ones never start
RUNNING: set[subprocess.Popen[bytes]] = set()
LOCK = threading.Lock()


def stop_all() -> None:
    STOP.set()
    with LOCK:
        for proc in RUNNING:
            proc.send_signal(signal.SIGINT)


def call(cmd: list[str], log: IO[bytes], env: dict[str, str]) -> int:
    with LOCK:
        if STOP.is_set():
            return -signal.SIGINT
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        RUNNING.add(proc)
    rc = proc.wait()
    with LOCK:
        RUNNING.discard(proc)
    return rc


def run_one(
    name: str, config: Path, overrides: list[str], out: Path, device: str
) -> dict[str, Any]:
    """Train and evaluate one run in a subprocess; returns its metrics (or the error)."""
    metrics_path = out / "metrics.json"
    if metrics_path.exists():
        return {"run": name, **json.loads(metrics_path.read_text())}
    if STOP.is_set():
        return {"run": name, "error": "not run (deadline passed, or --summarise-only)"}
    sets = [x for kv in overrides for x in ("--set", kv)]
    log = out.with_suffix(".log")
    out.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with log.open("wb") as f:
        cmds = [
            [
                *CLI,
                "train",
                "--config",
                str(config),
                "--out",
                str(out),
                *sets,
                "--set",
                f"train.device={device}",
            ],
            [*CLI, "evaluate", "--model", str(out), "--device", device, "--out", str(metrics_path)],
        ]
        for cmd in cmds:
            rc = call(cmd, f, env)
            if rc:
                why = "stopped at the deadline" if STOP.is_set() else f"exit {rc}"
                return {"run": name, "error": f"{why}, see {log}"}
    metrics = json.loads(metrics_path.read_text())
    metrics["seconds"] = time.perf_counter() - t0
    metrics_path.write_text(json.dumps(metrics, indent=2) + "\n")
    return {"run": name, **metrics}


def summarise(grid: dict[str, Any], runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    sel = grid.get("select", {"metric": "val_acc", "mode": "max", "tie": "val_auc"})
    sign = 1.0 if sel.get("mode", "max") == "max" else -1.0
    table = {}
    for variant, results in runs.items():
        ok = [r for r in results if "error" not in r]
        if not ok:
            continue
        keys = [k for k in ok[0] if isinstance(ok[0][k], float | int) and k != "seconds"]
        table[variant] = {
            "runs": len(ok),
            "mean": {k: statistics.fmean(r[k] for r in ok) for k in keys},
            "std": {k: statistics.pstdev(r[k] for r in ok) for k in keys},
        }

    def rank(v: str) -> tuple[float, float]:
        m = table[v]["mean"]
        return (sign * m[sel["metric"]], sign * m.get(sel.get("tie", sel["metric"]), 0.0))

    best = max(table, key=rank) if table else None
    return {"select": sel, "variants": table, "selected": best, "runs": runs}


def markdown(summary: dict[str, Any]) -> str:
    cols = ["parameters", "val_acc", "val_auc", "test_acc", "test_auc", "test_f1"]
    lines = [
        "| variant | runs | " + " | ".join(cols) + " |",
        "|---|---|" + "---|" * len(cols),
    ]
    for v, row in summary["variants"].items():
        cells = []
        for c in cols:
            m, s = row["mean"].get(c), row["std"].get(c)
            cells.append(
                "" if m is None else f"{m:.0f}" if c == "parameters" else f"{m:.3f} ± {s:.3f}"
            )
        mark = " (selected)" if v == summary["selected"] else ""
        lines.append(f"| {v}{mark} | {row['runs']} | " + " | ".join(cells) + " |")
    sel = summary["select"]
    missing = [r["run"] for rs in summary["runs"].values() for r in rs if "error" in r]
    if missing:
        names = ", ".join(sorted(missing))
        lines += ["", f"Not in the table (not run, or interrupted): {names}."]
    lines.append("")
    lines.append(
        f"Selected by the mean {sel['metric']} ({sel.get('mode', 'max')}) over seeds"
        f" (ties: {sel.get('tie', '-')}); mean ± std over seeds; test never used to choose."
    )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--grid", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--jobs", type=int, default=4, help="runs in parallel")
    p.add_argument("--device", default="auto")
    p.add_argument("--only", nargs="*", help="variants to run (default: all)")
    p.add_argument(
        "--deadline", type=float, help="seconds: then stop running jobs and start no more"
    )
    p.add_argument(
        "--summarise-only",
        action="store_true",
        help="run nothing: rebuild the summary from the finished runs in --out",
    )
    args = p.parse_args(argv)
    grid = yaml.safe_load(args.grid.read_text())
    config = ROOT / grid["config"]
    common = list(grid.get("common", []))
    variants = {k: v for k, v in grid["variants"].items() if not args.only or k in args.only}
    seeds = grid.get("seeds", [0])
    runs: dict[str, list[dict[str, Any]]] = {v: [] for v in variants}
    t0 = time.perf_counter()
    if args.summarise_only:
        stop_all()  # every run_one returns the finished run's metrics or "not run"
    if args.deadline:
        timer = threading.Timer(args.deadline, stop_all)
        timer.daemon = True
        timer.start()
    with ThreadPoolExecutor(args.jobs) as pool:
        futures = {
            pool.submit(
                run_one,
                f"{variant}-s{seed}",
                config,
                [*common, *(overrides or []), f"train.seed={seed}", "train.progress=false"],
                args.out / f"{variant}-s{seed}",
                args.device,
            ): variant
            for variant, overrides in variants.items()
            for seed in seeds
        }
        for fut, variant in futures.items():
            result = fut.result()
            runs[variant].append(result)
            shown = {k: round(v, 4) for k, v in result.items() if k.startswith(("val_", "test_"))}
            print(
                f"[{time.perf_counter() - t0:6.0f} s] {result['run']}: "
                f"{result.get('error') or shown}",
                flush=True,
            )
    summary = summarise(grid, runs)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    text = markdown(summary)
    (args.out / "summary.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
