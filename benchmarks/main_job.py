"""Record a finished run of the main job: wall time, every job's seconds and the timeline.

    time snakemake --cores all --forceall          # the run (Inductor cache emptied, idle)
    python benchmarks/main_job.py --out benchmarks/reference/main-job-<date> --what "..."

Reads the run's Snakemake log (the newest finished one in .snakemake/log/ unless --log is
given): its
``Elapsed time``, and when each job started and finished; and each job's seconds from its
benchmark file (results/benchmarks/, Snakemake's ``benchmark`` directive). The timeline
gives the cores' idle time: core-seconds in which a core ran no job although the run was
not over (``--cores`` of them; the last jobs' tail counts).
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import sys
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
_STAMP = re.compile(r"^\[(\w{3} \w{3} +\d+ \d\d:\d\d:\d\d \d{4})\]$")
_RULE = re.compile(r"^(?:local)?rule (\w+):$")
_JOBID = re.compile(r"^jobid: (\d+)$")
_WILDCARDS = re.compile(r"^wildcards: (.*)$")
_FINISHED = re.compile(r"^Finished jobid: (\d+) \(Rule: (\w+)\)$")
_ELAPSED = re.compile(r"^Elapsed time: (\d+):(\d\d):(\d\d(?:\.\d+)?)$")


def parse_log(text: str) -> tuple[float, list[dict[str, object]]]:
    """(elapsed seconds, jobs): each job's rule, wildcards and start and end in seconds
    from the first job's start (the log stamps whole seconds)."""
    stamp: datetime | None = None
    rule: str | None = None
    jobs: dict[int, dict[str, object]] = {}
    last: dict[str, object] = {}  # the job whose block is being read (wildcards follow jobid)
    elapsed = None
    for raw in text.splitlines():
        line = raw.strip()
        if m := _STAMP.match(line):
            stamp = datetime.strptime(" ".join(m.group(1).split()), "%a %b %d %H:%M:%S %Y")
        elif m := _RULE.match(line):
            rule = m.group(1)
        elif (m := _JOBID.match(line)) and rule is not None:
            last = jobs[int(m.group(1))] = {"rule": rule, "wildcards": "", "start": stamp}
            rule = None
        elif (m := _WILDCARDS.match(line)) and last:
            last["wildcards"] = m.group(1)
        elif (m := _FINISHED.match(line)) and int(m.group(1)) in jobs:
            jobs[int(m.group(1))]["end"] = stamp
        elif m := _ELAPSED.match(line):
            h, mnt, s = m.groups()
            elapsed = int(h) * 3600 + int(mnt) * 60 + float(s)
    if elapsed is None:
        raise SystemExit("the log has no 'Elapsed time' line: the run did not finish")
    t0 = min(j["start"] for j in jobs.values())  # type: ignore[type-var]
    timeline = []
    for job in sorted(jobs.values(), key=lambda j: j["start"]):  # type: ignore[arg-type,return-value]
        if job["rule"] == "all" or "end" not in job:
            continue
        timeline.append(
            {
                "job": f"{job['rule']}/{_short(str(job['wildcards']))}",
                "start_s": (job["start"] - t0).total_seconds(),  # type: ignore[operator]
                "end_s": (job["end"] - t0).total_seconds(),  # type: ignore[operator]
            }
        )
    return elapsed, timeline


def _short(wildcards: str) -> str:
    """'task=breastmnist, cell=width~48, fold=0' -> 'breastmnist/width~48/fold0'."""
    parts = dict(p.split("=", 1) for p in wildcards.split(", ") if "=" in p)
    fold = f"fold{parts.pop('fold')}" if "fold" in parts else None
    return "/".join([*parts.values(), *([fold] if fold else [])])


def idle_core_seconds(timeline: list[dict[str, object]], cores: int) -> float:
    """Core-seconds without a job between the first start and the last end."""
    end = max(float(j["end_s"]) for j in timeline)  # type: ignore[arg-type]
    busy = sum(float(j["end_s"]) - float(j["start_s"]) for j in timeline)  # type: ignore[arg-type]
    return cores * end - busy


def job_seconds(results: Path, jobs: set[str]) -> dict[str, dict[str, float]]:
    """{"train": {"breastmnist/width~48/fold0": 518.8, ...}, "other": {...}} from the
    benchmark files (a .tsv each, its column ``s``) of the run's jobs (older files of other
    targets stay out)."""
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
    ap.add_argument("--out", type=Path, required=True, help="folder of run.json")
    args = ap.parse_args(argv)
    log = args.log or _newest_finished(REPO / ".snakemake" / "log")
    elapsed, timeline = parse_log(log.read_text())
    seconds = job_seconds(args.results, {str(j["job"]) for j in timeline})
    record = {
        "what": args.what,
        "command": "time snakemake --cores all --forceall (Inductor cache emptied, "
        "NCAFLOW_DATA_MIRROR set)",
        "machine": args.machine,
        "snakemake_elapsed_s": round(elapsed, 1),
        "idle_core_s": round(idle_core_seconds(timeline, args.cores), 1),
        "note": "job seconds from each job's results/benchmarks/*.tsv (Snakemake's benchmark "
        "directive); timeline from the Snakemake log (whole seconds from the first job's start)",
        "train_job_seconds": seconds["train"],
        "other_job_seconds": seconds["other"],
        "timeline": timeline,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "run.json").write_text(json.dumps(record, indent=1) + "\n")
    print(
        f"{args.out / 'run.json'}: elapsed {elapsed:.1f} s, idle {record['idle_core_s']} "
        f"core-s, {len(seconds['train'])} training jobs"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
