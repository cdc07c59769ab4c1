"""Paper-grid training jobs on one GPU: K at once (each through ncaflow.runtime.gpuslots) or one
at a time.

    python benchmarks/grid.py plan --task breastmnist --out JOBS.json
    python benchmarks/grid.py run --jobs JOBS.json --concurrency 8 [--mps] [--together]
                                  [--iterations N] --out R
    python benchmarks/grid.py record --packed P.json --baseline B.json [--sweep S...] --out G.json
    python benchmarks/grid.py workflow-run --log RUN.log --models results/models/T --out W.json
    python benchmarks/grid.py project --tasks T.json --grid G.json
                                      (--packed-run W.json | --gain-grid F.json) --out P.json

plan asks Snakemake (a dry run of config/paper.yaml) for the task's `ncaflow train` commands,
so the jobs are exactly the workflow's (their --set overrides, --folds and --fold); run starts
them from the repository root, at most --concurrency at once, each as the GPU profile starts it
(`python -m ncaflow.runtime.gpuslots --per-device K ...`, shared compile caches), optionally under
CUDA MPS, with `--set train.iterations=N` appended to every job if --iterations is given (the same
shortening for packed and one-at-a-time runs); --together starts one process per grid cell
that trains the cell's folds in turn (`fold_jobs: together`), --concurrency such processes at
once. It samples `nvidia-smi` every 200 ms while the
jobs run and writes wall time, jobs/hour, mean GPU utilisation (0..1), peak memory and the
SHA-256 of every model.safetensors (packed == alone is checked by comparing those). record
puts a packed run and a one-at-a-time run of the same jobs into the grid JSON of issue 27.

project estimates the GPU time of every training job of a config (default config/paper.yaml,
from the same dry run): a job alone takes the fixed cost of a job (the grid record's jobs
alone, less their training) plus iterations x batch x H x W x mean rollout steps over its
task's cell-steps/s at the run config's batch (benchmarks/tasks.py's record, same GPU). Packed,
that sum is divided by the gain of a packed run of full-length jobs: with --packed-run, modelled
(workflow-run: a Snakemake run's span from its log, each job's iterations from its history.csv;
the gain is those jobs' one-at-a-time time by the same model over the span); with --gain-grid,
measured (a grid record of full-length jobs, `run --iterations 0`: its packed jobs/hour over its
one-at-a-time jobs/hour); N GPUs divide it again by N, the jobs being independent.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import snakemake_log

REPO = Path(__file__).resolve().parents[1]


def train_commands(targets: list[str], configfile: str) -> list[list[str]]:
    """Every `ncaflow train` command that the workflow would run for ``targets`` (all of them,
    trained or not: a --forceall dry run), as argv lists. The shell's redirection into the job's
    log and `--restart-changed` (a workflow job resuming its own checkpoint) are left out: these
    commands start afresh in folders of their own."""
    cmd = ["snakemake", *targets, "-n", "-p", "--forceall", "--cores", "1"]
    cmd += ["--configfile", configfile] if configfile else []
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.exit(f"the dry run {' '.join(cmd)} failed: {done.stderr.strip().splitlines()[-1:]}")
    commands = []
    for line in done.stdout.splitlines():
        if "ncaflow train " in line:
            argv = shlex.split(line[line.index("ncaflow train ") :])
            cut = next((i for i, a in enumerate(argv) if a in (">", ">>")), len(argv))
            commands.append([a for a in argv[:cut] if a != "--restart-changed"])
    return commands


def plan(task: str, configfile: str) -> list[dict[str, Any]]:
    """The task's training jobs as the workflow runs them: [{name, argv}] from a dry run
    (task "": every training job of the config's default target)."""
    jobs = []
    for argv in train_commands([task] if task else [], configfile):
        out = argv[argv.index("--out") + 1]
        prefix = f"results/models/{task}/" if task else "results/models/"
        jobs.append({"name": out.removeprefix(prefix), "argv": argv})
    return sorted(jobs, key=lambda j: j["name"])


class Sampler:
    """nvidia-smi's utilization.gpu and memory.used every ``period`` seconds, in a thread."""

    def __init__(self, period: float = 0.2) -> None:
        self.period = period
        self.samples: list[tuple[float, float, float]] = []  # (t, util 0..1, MiB used)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.available = shutil.which("nvidia-smi") is not None

    def _run(self) -> None:
        query = [
            "nvidia-smi",
            "--query-gpu=utilization.gpu,memory.used",
            "--format=csv,noheader,nounits",
        ]
        t0 = time.perf_counter()
        while not self._stop.is_set():
            try:
                out = subprocess.run(query, capture_output=True, text=True, timeout=5).stdout
                util, mem = (float(x) for x in out.splitlines()[0].split(","))
                self.samples.append((time.perf_counter() - t0, util / 100, mem))
            except (OSError, ValueError, IndexError, subprocess.TimeoutExpired):
                pass
            self._stop.wait(self.period)

    def __enter__(self) -> Sampler:
        if self.available:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self.available:
            self._thread.join()


def mps(start: bool) -> None:
    """Start (``nvidia-cuda-mps-control -d``) or stop CUDA MPS."""
    if start:
        subprocess.run(["nvidia-cuda-mps-control", "-d"], check=True)
        time.sleep(1)
    else:
        subprocess.run(["nvidia-cuda-mps-control"], input="quit\n", text=True, check=False)
        time.sleep(2)


def processes(jobs: list[dict[str, Any]], together: bool) -> list[list[dict[str, Any]]]:
    """The jobs as processes: one each, or (``together``) one per grid cell training its
    folds (or seeds) in turn (`ncaflow train --out D0 D1 ... --fold 0 1 ...`, the workflow's
    `fold_jobs: together`)."""
    if not together:
        return [[job] for job in jobs]
    cells: dict[str, list[dict[str, Any]]] = {}
    for job in jobs:
        cells.setdefault(job["name"].rsplit("/", 1)[0], []).append(job)
    return list(cells.values())


def command(group: list[dict[str, Any]], root: Path) -> tuple[list[str], list[Path]]:
    """One process's `ncaflow train` argv (its --out folders under ``root``) and folders."""
    argv = list(group[0]["argv"])
    outs = [root / job["name"] for job in group]
    argv[argv.index("--out") + 1 : argv.index("--out") + 2] = [str(o) for o in outs]
    if len(group) > 1:  # each folder's --fold (k-fold jobs) or --seed (benchmarks/recipes.py)
        flag = next((f for f in ("--fold", "--seed") if f in argv), None)
        if flag is None:
            sys.exit("grid.py run --together: the jobs have neither --fold nor --seed")
        values = [job["argv"][job["argv"].index(flag) + 1] for job in group]
        argv[argv.index(flag) + 1 : argv.index(flag) + 2] = values
    if argv[0] == "ncaflow" and shutil.which("ncaflow") is None:
        argv[:1] = [sys.executable, "-m", "ncaflow.cli"]  # not installed
    return argv, outs


def run_jobs(args: argparse.Namespace) -> dict[str, Any]:
    jobs = json.loads(args.jobs.read_text())[: args.limit or None]
    root = args.root.resolve()
    if root.exists():
        shutil.rmtree(root)
    k = args.concurrency
    groups = processes(jobs, args.together)
    pending = list(groups)
    running: list[tuple[list[dict[str, Any]], subprocess.Popen[bytes], float, list[Path]]] = []
    per_job: list[dict[str, Any]] = []
    if args.mps:
        mps(True)
    t0 = time.perf_counter()
    try:
        with Sampler() as sampler:
            while pending or running:
                if args.deadline and time.perf_counter() - t0 > args.deadline:
                    pending.clear()  # start no more: the rate is over the jobs that ran
                while pending and len(running) < k:
                    group = pending.pop(0)
                    argv, outs = command(group, root)
                    for out in outs:
                        out.parent.mkdir(parents=True, exist_ok=True)
                    if args.iterations:
                        argv += ["--set", f"train.iterations={args.iterations}"]
                    pin = [sys.executable, "-m", "ncaflow.runtime.gpuslots", "--per-device", str(k)]
                    pin += ["--locks", str(root / ".slots"), "--cache", str(args.cache), "--"]
                    name = group[0]["name"].replace("/", "_")
                    log = open(root / f"{name}.log", "wb")  # noqa: SIM115
                    proc = subprocess.Popen(
                        pin + argv, cwd=REPO, stdout=log, stderr=subprocess.STDOUT
                    )
                    log.close()
                    running.append((group, proc, time.perf_counter(), outs))
                time.sleep(0.05)
                for item in list(running):
                    group, proc, start, outs = item
                    if proc.poll() is None:
                        continue
                    running.remove(item)
                    for job, out in zip(group, outs, strict=True):
                        model = out / "model.safetensors"
                        per_job.append(
                            {
                                "name": job["name"],
                                "rc": proc.returncode,
                                "wall_s": time.perf_counter() - start,  # its process's
                                "sha256": hashlib.sha256(model.read_bytes()).hexdigest()
                                if model.exists()
                                else None,
                            }
                        )
    finally:
        if args.mps:
            mps(False)
    wall = time.perf_counter() - t0
    utils = [u for _, u, _ in sampler.samples]
    failed = [j["name"] for j in per_job if j["rc"] != 0]
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "device": gpu_name(),
        "jobs": len(per_job),
        "jobs_planned": len(jobs),
        "concurrency": k,
        "mps": args.mps,
        "together": args.together,
        "processes": len(groups),
        "iterations": args.iterations,
        "wall_s": wall,
        "jobs_per_hour": len(per_job) / wall * 3600,
        "gpu_util_mean": statistics.mean(utils) if utils else None,
        "gpu_mem_peak_mib": max((m for _, _, m in sampler.samples), default=None),
        "failed": failed,
        "per_job": sorted(per_job, key=lambda j: j["name"]),
        "timeline": [list(s) for s in sampler.samples],
    }


def gpu_name() -> str:
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout
        return out.strip().splitlines()[0] if out.strip() else "cpu"
    except (OSError, subprocess.TimeoutExpired):
        return "cpu"


def record(args: argparse.Namespace) -> dict[str, Any]:
    packed = json.loads(args.packed.read_text())
    base = json.loads(args.baseline.read_text())
    same = {j["name"]: j["sha256"] for j in base["per_job"]}
    equal = [
        j["name"] for j in packed["per_job"] if j["sha256"] and same.get(j["name"]) == j["sha256"]
    ]
    out: dict[str, Any] = {
        "device": packed["device"],
        "jobs": packed["jobs"],
        "wall_s": packed["wall_s"],
        "gpu_util_mean": packed["gpu_util_mean"],
        "jobs_per_hour": packed["jobs_per_hour"],
        "baseline_jobs_per_hour": base["jobs_per_hour"],
        "speedup": packed["jobs_per_hour"] / base["jobs_per_hour"],
        "concurrency": packed["concurrency"],
        "mps": packed["mps"],
        "together": packed.get("together", False),
        "iterations": packed["iterations"],
        "baseline_wall_s": base["wall_s"],
        "baseline_gpu_util_mean": base["gpu_util_mean"],
        "models_byte_identical_to_baseline": f"{len(equal)} of {packed['jobs']}",
        "note": args.note,
        "packed": {k: v for k, v in packed.items() if k != "timeline"},
        "baseline": {k: v for k, v in base.items() if k != "timeline"},
        "packed_timeline": packed["timeline"],
    }
    sweep = []
    for path in args.sweep or []:
        r = json.loads(path.read_text())
        sweep.append({k: v for k, v in r.items() if k not in ("timeline", "per_job")})
    if sweep:
        out["sweep"] = sweep
    return out


TASK_RECORD = {"classification": "breastmnist", "segmentation": "kvasir"}  # else the task name
# the training rules: `train`, or with fold_jobs: together `train_<task>_<N>folds`
_TRAIN_RULE = re.compile(r"^train(_\w+_\d+folds)?$")


def workflow_run(args: argparse.Namespace) -> dict[str, Any]:
    """A packed Snakemake run's training jobs, from its log (benchmarks/snakemake_log.py) and
    their output folders: the span from the first train job's start to the last one's end,
    and each job's iterations (the last row of its history.csv; early stopping ends some
    sooner)."""
    _, ran = snakemake_log.read(args.log.read_text())
    trains = [j for j in ran if _TRAIN_RULE.match(j.rule)]
    if not trains:
        sys.exit(f"grid.py workflow-run: {args.log} has no finished train job")
    first, last = trains[0].start, max(j.end for j in trains)
    jobs = []
    for history in sorted(args.models.glob("*/fold*/history.csv")):
        rows = history.read_text().splitlines()
        iteration = float(rows[-1].split(",", 1)[0])
        jobs.append({"name": str(history.parent.relative_to(args.models)), "iterations": iteration})
    return {
        "task": args.task,
        "jobs": len(jobs),
        "span_s": (last - first).total_seconds(),
        "iterations": sum(j["iterations"] for j in jobs),
        "per_job": jobs,
        "note": args.note,
    }


def packing(packed: dict[str, Any], fixed: float, it_s: float) -> float:
    """The packed run's gain: its jobs one at a time (fixed + iterations / it_s each) over
    its span."""
    alone = sum(fixed + j["iterations"] / it_s for j in packed["per_job"])
    return alone / packed["span_s"]


def project(args: argparse.Namespace) -> dict[str, Any]:
    """Projected GPU hours of a config's training jobs (see the module docstring)."""
    from ncaflow.tasks import get_task
    from ncaflow.tasks.runconfig import load_config

    tasks, grid = json.loads(args.tasks.read_text()), json.loads(args.grid.read_text())
    rate: dict[str, float] = {}
    it_s: dict[str, float] = {}
    for row in tasks["rows"]:  # the first row of each run config is at its own batch
        rate.setdefault(row["config"], row["cell_steps_per_s"])
        it_s.setdefault(row["config"], row["iterations_per_s"])
    alone = grid["baseline"]["per_job"]  # the grid record's jobs are BreastMNIST's
    fixed = statistics.mean(j["wall_s"] for j in alone) - grid["iterations"] / it_s["breastmnist"]
    if args.gain_grid:  # measured: a grid record's full-length jobs, packed against alone
        gain, source = json.loads(args.gain_grid.read_text())["speedup"], args.gain_grid
    else:  # modelled: a workflow run's span against its jobs one at a time by the model above
        packed = json.loads(args.packed_run.read_text())
        gain, source = packing(packed, fixed, it_s[packed["task"]]), args.packed_run
    per_task: dict[str, dict[str, float]] = {}
    for job in plan(args.target, args.configfile):
        argv = job["argv"]
        sets = [argv[i + 1] for i, a in enumerate(argv) if a == "--set"]
        cfg = load_config(REPO / argv[argv.index("--config") + 1], sets)
        record = TASK_RECORD.get(cfg.task, cfg.task)
        h, w = get_task(cfg.task).grid_size(dict(cfg.data), {}) or (0, 0)
        t = cfg.train
        cells = t.batch_size * h * w * (t.steps[0] + t.steps[-1]) / 2
        train_s = t.iterations * cells / rate[record]
        entry = per_task.setdefault(cfg.name or record, {"jobs": 0, "training_s": 0.0})
        entry["jobs"] += 1
        entry["training_s"] += train_s
    jobs = sum(int(e["jobs"]) for e in per_task.values())
    alone_h = (jobs * fixed + sum(e["training_s"] for e in per_task.values())) / 3600
    return {
        "device": tasks["machine"]["gpu"],
        "configfile": args.configfile,
        "jobs": jobs,
        "fixed_s_per_job": fixed,
        "packing": gain,
        "packed_run": str(source),
        "gain": "measured" if args.gain_grid else "modelled",
        "one_gpu_one_at_a_time_h": alone_h,
        "one_gpu_packed_h": alone_h / gain,
        "gpus": {str(n): alone_h / gain / n for n in (1, 2, 4, 8)},
        "per_task": per_task,
        "note": args.note,
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = p.add_subparsers(dest="cmd", required=True)
    pp = sub.add_parser("plan")
    pp.add_argument("--task", default="breastmnist")
    pp.add_argument("--configfile", default="config/paper.yaml")
    pp.add_argument("--out", type=Path, required=True)
    pr = sub.add_parser("run")
    pr.add_argument("--jobs", type=Path, required=True)
    pr.add_argument("--concurrency", type=int, default=1)
    pr.add_argument("--limit", type=int, default=0, help="the first N jobs only")
    pr.add_argument("--iterations", type=int, default=0, help="train.iterations for every job")
    pr.add_argument("--mps", action="store_true", help="run under CUDA MPS")
    pr.add_argument(
        "--together", action="store_true", help="a grid cell's folds in one process, in turn"
    )
    pr.add_argument("--deadline", type=float, default=0, help="start no job after N seconds")
    pr.add_argument("--root", type=Path, default=REPO / "benchmarks" / "results" / "grid-run")
    pr.add_argument("--cache", type=Path, default=REPO / ".snakemake" / "compile-cache")
    pr.add_argument("--out", type=Path, required=True)
    pc = sub.add_parser("record")
    pc.add_argument("--packed", type=Path, required=True)
    pc.add_argument("--baseline", type=Path, required=True)
    pc.add_argument("--sweep", type=Path, nargs="*")
    pc.add_argument("--note", default="")
    pc.add_argument("--out", type=Path, required=True)
    pj = sub.add_parser("project")
    pj.add_argument("--tasks", type=Path, required=True, help="benchmarks/tasks.py's record")
    pj.add_argument("--grid", type=Path, required=True, help="the grid record (fixed cost)")
    gain = pj.add_mutually_exclusive_group(required=True)
    gain.add_argument("--packed-run", type=Path, help="a workflow-run record (modelled gain)")
    gain.add_argument("--gain-grid", type=Path, help="a full-length grid record (measured gain)")
    pj.add_argument("--configfile", default="config/paper.yaml")
    pj.add_argument("--target", default="", help="a Snakemake target (default: the config's)")
    pj.add_argument("--note", default="")
    pj.add_argument("--out", type=Path, required=True)
    pw = sub.add_parser("workflow-run")
    pw.add_argument("--log", type=Path, required=True, help="the Snakemake log of the run")
    pw.add_argument("--models", type=Path, required=True, help="results/models/<task>")
    pw.add_argument("--task", default="breastmnist", help="its run config in the tasks record")
    pw.add_argument("--note", default="")
    pw.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    if args.cmd == "workflow-run":
        result = workflow_run(args)
        args.out.write_text(json.dumps(result, indent=1) + "\n")
        print(json.dumps({k: v for k, v in result.items() if k != "per_job"}))
        return
    if args.cmd == "plan":
        jobs = plan(args.task, args.configfile)
        args.out.write_text(json.dumps(jobs, indent=1) + "\n")
        print(f"{len(jobs)} jobs -> {args.out}")
        return
    if args.cmd == "project":
        result = project(args)
        args.out.write_text(json.dumps(result, indent=1) + "\n")
        print(json.dumps({k: v for k, v in result.items() if k != "per_task"}))
        return
    result = run_jobs(args) if args.cmd == "run" else record(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    brief = {
        k: result[k]
        for k in ("device", "jobs", "wall_s", "jobs_per_hour", "gpu_util_mean")
        if k in result
    }
    print(
        json.dumps(
            brief
            | {k: result[k] for k in ("concurrency", "mps", "failed", "speedup") if k in result}
        )
    )


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
