"""Time the workflow's own overhead: the DAG of a large grid search, and the CLI's start-up.

    python benchmarks/workflow_overhead.py [--values 10] [--repeats 3] [--out DIR]

The DAG: ``snakemake -n --quiet rules`` on the growing task alone with a grid of three keys
(hidden channels, hidden width, fire rate) of --values values each and one fold, so 10
values give 1,000 training jobs. The config is written to a temporary file; the workflow
only reads it (a dry run writes nothing). Start-up: ``python -c "import ncaflow.cli"`` and
``ncaflow --help`` (what every job of the workflow pays before its command imports torch),
and ``import ncaflow.model.nca`` (torch included), each the median of --repeats fresh processes.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent


def grid_config(values: int) -> dict[str, object]:
    """The growing task with a values**3 grid and one fold (a dry run reads no data)."""
    return {
        "mirror": None,
        "fold_seed": 0,
        "tasks": {
            "growing": {
                "run": "config/runs/growing.yaml",
                "folds": 1,
                "fold_by": "seed",
                "grid": {
                    "hidden": {
                        "key": "model.hidden_channels",
                        "values": [4 + i for i in range(values)],
                    },
                    "width": {
                        "key": "model.hidden_width",
                        "values": [16 + 8 * i for i in range(values)],
                    },
                    "fire": {
                        "key": "model.fire_rate",
                        "values": [round(0.1 * (i + 1), 2) for i in range(values)],
                    },
                },
            }
        },
    }


def timed(cmd: list[str], repeats: int) -> tuple[float, str]:
    """Median wall seconds of ``repeats`` runs of cmd from the repository root, and the last
    run's output; a failing run stops with its output."""
    times, out = [], ""
    for _ in range(repeats):
        start = time.perf_counter()
        proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
        times.append(time.perf_counter() - start)
        out = proc.stdout + proc.stderr
        if proc.returncode != 0:
            raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{out[-2000:]}")
    return statistics.median(times), out


def job_counts(dry_run: str) -> dict[str, int]:
    """The job-stats table of a Snakemake dry run, rule -> count (and "total")."""
    return {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)$", dry_run, re.M)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--values", type=int, default=10, help="values per grid key (cells: cube)")
    ap.add_argument("--repeats", type=int, default=3, help="processes per timing (median)")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks/results")
    args = ap.parse_args()
    snakemake, cli = shutil.which("snakemake"), shutil.which("ncaflow")
    if snakemake is None or cli is None:
        raise SystemExit("snakemake and ncaflow must be on PATH (bash scripts/install.sh)")
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / f"grid{args.values}.yaml"
        config.write_text(yaml.safe_dump(grid_config(args.values)))
        dag_s, dry = timed(
            [snakemake, "-n", "--quiet", "rules", "--configfile", str(config)], args.repeats
        )
    jobs = job_counts(dry)
    py = sys.executable
    startup = {
        "import ncaflow.cli": timed([py, "-c", "import ncaflow.cli"], args.repeats)[0],
        "ncaflow --help": timed([cli, "--help"], args.repeats)[0],
        "import ncaflow.model.nca": timed([py, "-c", "import ncaflow.model.nca"], args.repeats)[0],
    }
    print(f"snakemake -n, {args.values}^3 grid: {jobs.get('train', 0)} training jobs, "
          f"{jobs.get('total', 0)} in all: {dag_s:.2f} s (median of {args.repeats})")  # fmt: skip
    for what, seconds in startup.items():
        print(f"{what:20s} {seconds:.3f} s")
    load = os.getloadavg()[0]
    print(f"load average at the end: {load:.2f}")
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"workflow-overhead-{datetime.now(UTC):%Y%m%d-%H%M%S}.json"
    record = {
        "values": args.values,
        "repeats": args.repeats,
        "jobs": jobs,
        "dry_run_s": dag_s,
        "startup_s": startup,
        "load_average": load,
        "cpus": os.cpu_count(),
    }
    path.write_text(json.dumps(record, indent=1))
    print("wrote", path)


if __name__ == "__main__":
    main()
