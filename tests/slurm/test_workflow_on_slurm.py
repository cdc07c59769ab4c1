"""The real ncaflow workflow on the SLURM test cluster (issue 6).

A trimmed copy of .test/config/config.yaml (two tasks, three trainings) runs through
``--profile workflow/profiles/slurm`` in a temporary copy of the workflow, and at
the same time through a local ``--cores 2`` run of the same config in another
copy; the tables, metrics and model weights of the two must be identical.
A third run with a setting that only fails once training starts checks that a
failing SLURM job fails the run.  The three runs overlap, so the SLURM status
checks cost no extra time: the module stays within a few minutes on 2 cores.

Thread counts: training is deterministic on CPU for a fixed number of threads.
The tiny config gives every rule 1 thread; locally Snakemake sets
OMP_NUM_THREADS & co. from the rule's ``threads``, and on SLURM the job asks for
``--cpus-per-task`` = threads (checked with sacct below) and the jobstep runs the
rule's shell command through the same Snakemake code, which sets the same
variables inside the job.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import shutil
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

# conftest.py's SlurmCluster and SnakemakeRun, by duck type (see test_slurm_cluster.py).
SlurmCluster = Any
SnakemakeRun = Any

REPO = Path(__file__).resolve().parents[2]
CONFIG = "config/slurm_test.yaml"

# What the trimmed config makes: growing has 1 cell x 2 folds (seeds), selfclass
# 1 cell x 1 fold.  Targets: the tables, and the growing plots (a local rule).
TARGETS = ["tables", "results/figures/growing/folds.png"]
SUBMITTED = {"train": 3, "evaluate": 3, "aggregate": 2}  # rule -> SLURM jobs
LOCAL = {"download", "plot", "tables"}  # rules that must run on the submitting node
TASKS = ("growing", "selfclass")


def _copy_workflow(dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "Snakefile", dest / "Snakefile")
    for folder in ("workflow", "config", ".test"):
        shutil.copytree(REPO / folder, dest / folder, ignore=shutil.ignore_patterns("__pycache__"))
    return dest


def _trimmed_tiny(root: Path, *, broken: bool = False) -> None:
    """.test/config/config.yaml cut to two tasks (growing: 2 folds, selfclass: 1 fold).

    broken: growing only, 1 fold, with a training device that does not exist:
    it passes the workflow's config checks and fails when `ncaflow train` starts.
    """
    config = yaml.safe_load((root / ".test" / "config" / "config.yaml").read_text())
    config["tasks"] = {name: config["tasks"][name] for name in TASKS}
    config["tasks"]["selfclass"]["folds"] = 1
    if broken:
        del config["tasks"]["selfclass"]
        config["tasks"]["growing"]["folds"] = 1
        config["tasks"]["growing"]["set"]["train.device"] = "no-such-device"
    (root / CONFIG).write_text(yaml.safe_dump(config, sort_keys=False))


def _rules(output: str) -> tuple[Counter[str], Counter[str]]:
    """Jobs per rule in a Snakemake log: (submitted rules, local rules)."""
    submitted = Counter(re.findall(r"^rule (\w+):$", output, flags=re.MULTILINE))
    local = Counter(re.findall(r"^localrule (\w+):$", output, flags=re.MULTILINE))
    return submitted, local


def _log_rule(log: Path, workdir: Path) -> str:
    """The rule of a SLURM log, .snakemake/slurm_logs/rule_<name>/<wildcards>/<jobid>.log."""
    first = log.relative_to(workdir / ".snakemake" / "slurm_logs").parts[0]
    assert first.startswith("rule_"), log
    return first.removeprefix("rule_")


def _accounted(cluster: SlurmCluster, job_ids: list[str], fields: str) -> list[dict[str, str]]:
    """sacct records of finished jobs; slurmdbd may lag the controller a little."""
    deadline = time.monotonic() + 30
    while True:
        rows = cluster.sacct(job_ids, fields)
        done = [r for r in rows if r["State"] not in ("PENDING", "RUNNING")]
        if len(done) == len(job_ids) or time.monotonic() > deadline:
            return rows
        time.sleep(1)


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _ok(run: SnakemakeRun) -> None:
    assert run.returncode == 0, run.output[-8000:]


@pytest.fixture(scope="module")
def runs(
    slurm_cluster: SlurmCluster, tmp_path_factory: pytest.TempPathFactory, mirror: Path
) -> dict[str, SnakemakeRun]:
    """The trimmed tiny config on SLURM and locally, and the broken one on SLURM, at once."""
    cluster = dataclasses.replace(
        slurm_cluster, env={**slurm_cluster.env, "NCAFLOW_DATA_MIRROR": str(mirror)}
    )
    base = tmp_path_factory.mktemp("workflow")
    roots = {name: _copy_workflow(base / name) for name in ("slurm", "local", "broken")}
    _trimmed_tiny(roots["slurm"])
    _trimmed_tiny(roots["local"])
    _trimmed_tiny(roots["broken"], broken=True)
    args = [*TARGETS, "--configfile", CONFIG]
    with ThreadPoolExecutor(max_workers=3) as pool:
        jobs = {
            "slurm": pool.submit(
                cluster.run_snakemake,
                roots["slurm"],
                roots["slurm"] / "Snakefile",
                args,
                timeout=420,
            ),
            "local": pool.submit(
                cluster.run_snakemake_locally,
                roots["local"],
                roots["local"] / "Snakefile",
                args,
                cores=2,
                timeout=420,
            ),
            "broken": pool.submit(
                cluster.run_snakemake,
                roots["broken"],
                roots["broken"] / "Snakefile",
                ["tables", "--configfile", CONFIG],
                timeout=300,
            ),
        }
        return {name: job.result() for name, job in jobs.items()}


@pytest.mark.slurm
def test_tiny_workflow_jobs_go_through_slurm(
    runs: dict[str, SnakemakeRun], slurm_cluster: SlurmCluster
) -> None:
    on_slurm, local = runs["slurm"], runs["local"]
    _ok(on_slurm)
    _ok(local)

    # the Snakemake log: train, evaluate and aggregate submitted, the rest local
    submitted, ran_locally = _rules(on_slurm.output)
    assert submitted == Counter(SUBMITTED), on_slurm.output[-6000:]
    assert set(ran_locally) == LOCAL, on_slurm.output[-6000:]
    assert ran_locally["download"] == len(TASKS)
    assert ran_locally["plot"] == 1
    assert local.slurm_job_ids == []

    # one SLURM job id per submitted job, one kept log each, under its rule
    job_ids = on_slurm.slurm_job_ids
    assert len(job_ids) == len(set(job_ids)) == sum(SUBMITTED.values()), on_slurm.output[-6000:]
    logs = on_slurm.slurm_logs()
    assert sorted(log.stem for log in logs) == sorted(job_ids)
    assert Counter(_log_rule(log, on_slurm.workdir) for log in logs) == Counter(SUBMITTED)

    # accounting: all completed, in the profile's partition, with as many CPUs as
    # the config gives the rule threads (sbatch --cpus-per-task)
    resources = yaml.safe_load((on_slurm.workdir / CONFIG).read_text())["resources"]
    threads = {
        "train": resources["train"]["threads"],
        "evaluate": resources["evaluate"]["threads"],
        "aggregate": resources["other"]["threads"],
    }
    rule_of = {log.stem: _log_rule(log, on_slurm.workdir) for log in logs}
    rows = _accounted(slurm_cluster, job_ids, "JobID,State,ExitCode,Partition,AllocCPUS")
    assert sorted(r["JobID"] for r in rows) == sorted(job_ids)
    for row in rows:
        assert row["State"] == "COMPLETED" and row["ExitCode"] == "0:0", row
        assert row["Partition"] == slurm_cluster.partition, row
        assert int(row["AllocCPUS"]) == threads[rule_of[row["JobID"]]], row

    # outputs of the local rules are there
    for task in TASKS:
        assert (on_slurm.workdir / f"data/raw/manifests/{task}.json").is_file()
    assert (on_slurm.workdir / "results/figures/growing/folds.png").stat().st_size > 1000


@pytest.mark.slurm
def test_tiny_workflow_on_slurm_equals_local_run(runs: dict[str, SnakemakeRun]) -> None:
    on_slurm, local = runs["slurm"], runs["local"]
    _ok(on_slurm)
    _ok(local)
    slurm_root, local_root = on_slurm.workdir, local.workdir

    tables = sorted(p.name for p in (local_root / "results/tables").glob("*.csv"))
    assert tables == sorted(f"{t}{s}.csv" for t in TASKS for s in ("", "_folds"))
    assert sorted(p.name for p in (slurm_root / "results/tables").glob("*.csv")) == tables
    for name in tables:
        expected = pd.read_csv(local_root / "results/tables" / name)
        actual = pd.read_csv(slurm_root / "results/tables" / name)
        pd.testing.assert_frame_equal(actual, expected, check_exact=True, obj=name)
        # and the files themselves, byte for byte
        assert (slurm_root / "results/tables" / name).read_text() == (
            local_root / "results/tables" / name
        ).read_text(), name
    for task in TASKS:
        best = f"results/tables/{task}.best"
        assert (slurm_root / best).read_text() == (local_root / best).read_text()

    # The tables round numbers to 6 digits; the metrics (full float precision)
    # and the trained weights must be equal too.
    models = sorted(
        p.parent.relative_to(local_root)
        for p in (local_root / "results/models").rglob("model.safetensors")
    )
    assert len(models) == SUBMITTED["train"]
    for model in models:
        local_metrics = (local_root / model / "metrics.json").read_text()
        slurm_metrics = (slurm_root / model / "metrics.json").read_text()
        assert json.loads(local_metrics), model
        assert slurm_metrics == local_metrics, model
        assert _digest(slurm_root / model / "model.safetensors") == _digest(
            local_root / model / "model.safetensors"
        ), model


@pytest.mark.slurm
def test_failing_training_job_fails_the_run(
    runs: dict[str, SnakemakeRun], slurm_cluster: SlurmCluster
) -> None:
    broken = runs["broken"]
    assert broken.returncode != 0, broken.output[-6000:]
    assert broken.seconds < 240, f"took {broken.seconds:.0f} s to notice the failure"
    assert "Error in rule train" in broken.output, broken.output[-6000:]
    # the download ran here, the training was submitted (the failed job's log,
    # shown in the output, adds the job's own `localrule train:` and `rule train:`)
    submitted, ran_locally = _rules(broken.output)
    assert set(submitted) == {"train"}, broken.output[-6000:]
    assert ran_locally["download"] == 1, broken.output[-6000:]
    # it failed for the reason given: `ncaflow train` rejected the device
    train_log = broken.workdir / "results/logs/train/growing/hidden~8/fold0.log"
    reason = train_log.read_text()
    assert "ncaflow train: " in reason and "no-such-device" in reason, reason
    assert not list((broken.workdir / "results/models").rglob("model.safetensors"))

    (job_id,) = broken.slurm_job_ids
    (log,) = broken.slurm_logs()  # kept: the plugin keeps the logs of failed jobs
    assert log.stem == job_id and _log_rule(log, broken.workdir) == "train"
    (row,) = _accounted(slurm_cluster, [job_id], "JobID,State,ExitCode")
    assert row["State"] == "FAILED", row
