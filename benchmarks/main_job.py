"""Record a finished run of the main job: wall time, every job's seconds and the timeline.

    time snakemake --cores all --forceall          # the run (Inductor cache emptied, idle)
    python benchmarks/main_job.py --what "..." --out benchmarks/reference/main-job-<date>/run.json

Reads the run's Snakemake log (the newest finished one in .snakemake/log/ unless --log is
given; benchmarks/snakemake_log.py): its ``Elapsed time``, and when each job started and
finished; and each job's seconds from its benchmark file (results/benchmarks/, Snakemake's
``benchmark`` directive; files of jobs that are not in the log stay out). The timeline gives
the cores' idle time: core-seconds in which a core ran no job although the run was not over
(``--cores`` of them; the last jobs' tail counts).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import snakemake_log

REPO = Path(__file__).resolve().parent.parent


def timeline(jobs: list[snakemake_log.Job]) -> list[dict[str, object]]:
    """Each job's name and its start and end in seconds from the first job's start."""
    t0 = jobs[0].start
    return [
        {
            "job": job.name,
            "start_s": (job.start - t0).total_seconds(),
            "end_s": (job.end - t0).total_seconds(),
        }
        for job in jobs
    ]


def idle_core_seconds(jobs: list[snakemake_log.Job], cores: int) -> float:
    """Core-seconds without a job between the first start and the last end."""
    span = (max(j.end for j in jobs) - jobs[0].start).total_seconds()
    return cores * span - sum(j.seconds for j in jobs)


def job_seconds(results: Path, jobs: set[str]) -> dict[str, dict[str, float]]:
    """{"train": {"breastmnist/width~48/fold0": 518.8, ...}, "other": {...}} from the
    benchmark files (a .tsv each, its column ``s``) of the given jobs."""
    out: dict[str, dict[str, float]] = {"train": {}, "other": {}}
    for tsv in sorted((results / "benchmarks").rglob("*.tsv")):
        name = str(tsv.relative_to(results / "benchmarks").with_suffix(""))
        if name not in jobs:
            continue
        with tsv.open() as f:
            row = next(csv.DictReader(f, delimiter="\t"))
        kind = "train" if name.startswith("train/") else "other"
        out[kind][name.removeprefix("train/")] = round(float(row["s"]), 2)
    return out


def _newest_finished(folder: Path) -> Path:
    """The newest log of a finished run (the report rule's nested Snakemake writes a newer,
    shorter one)."""
    for log in sorted(folder.glob("*.snakemake.log"), reverse=True):
        if "\nElapsed time: " in log.read_text():
            return log
    raise SystemExit(f"no log of a finished run in {folder}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--log", type=Path, help="the run's Snakemake log (default: the newest)")
    ap.add_argument("--results", type=Path, default=REPO / "results")
    ap.add_argument("--cores", type=int, default=2, help="the run's --cores")
    ap.add_argument("--what", required=True, help="what was run (commit, config, changes)")
    ap.add_argument("--machine", default="this project's 2-core AMD EPYC (AVX-512), idle")
    ap.add_argument("--out", type=Path, required=True, help="the record (JSON) to write")
    args = ap.parse_args(argv)
    log = args.log or _newest_finished(REPO / ".snakemake" / "log")
    elapsed, jobs = snakemake_log.read(log.read_text())
    if elapsed is None:
        raise SystemExit(f"{log} has no 'Elapsed time' line: the run did not finish")
    seconds = job_seconds(args.results, {j.name for j in jobs})
    record = {
        "what": args.what,
        "command": "time snakemake --cores all --forceall (Inductor cache emptied, "
        "NCAFLOW_DATA_MIRROR set)",
        "machine": args.machine,
        "snakemake_elapsed_s": round(elapsed, 1),
        "idle_core_s": round(idle_core_seconds(jobs, args.cores), 1),
        "note": "job seconds from each job's results/benchmarks/*.tsv (Snakemake's benchmark "
        "directive); timeline from the Snakemake log (whole seconds from the first job's start)",
        "train_job_seconds": seconds["train"],
        "other_job_seconds": seconds["other"],
        "timeline": timeline(jobs),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=1) + "\n")
    print(
        f"{args.out}: elapsed {elapsed:.1f} s, idle {record['idle_core_s']} core-s, "
        f"{len(seconds['train'])} training jobs"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
