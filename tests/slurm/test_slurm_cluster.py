"""The SLURM test cluster and the Snakemake SLURM profile, end to end.

Each workflow here is a throwaway Snakefile written into tmp_path; the real
workflow goes through the same ``slurm_cluster.run_snakemake`` (see conftest.py).
"""

from __future__ import annotations

import io
import time
from pathlib import Path
from typing import Any

import pytest

# conftest.py's SlurmCluster and SnakemakeRun, by duck type: a module cannot
# import its conftest reliably (tests/ has a conftest.py of the same name).
SlurmCluster = Any
SnakemakeRun = Any

SLURM_PROFILE = Path(__file__).resolve().parents[2] / "workflow" / "profiles" / "slurm"

# Two independent jobs and one that aggregates them (with 2 threads, so 2 CPUs).
THREE_JOBS = """
rule all:
    input:
        "out/total.txt",

rule left:
    output:
        "out/left.txt",
    shell:
        "seq 1 10 > {output}"

rule right:
    output:
        "out/right.txt",
    shell:
        "seq 11 20 > {output}"

rule total:
    input:
        "out/left.txt",
        "out/right.txt",
    output:
        "out/total.txt",
    threads: 2
    shell:
        "awk '{{s += $1}} END {{print s}}' {input} > {output}"
"""

FAILING = """
rule all:
    input:
        "out/never.txt",

rule broken:
    output:
        "out/never.txt",
    shell:
        "echo half-written > {output}; echo 'deliberate failure' >&2; exit 3"
"""

# The two ways a rule asks for a GPU; the cluster has one fake GPU.
GPU = """
rule all:
    input:
        "out/by_gpu_resource.txt",
        "out/by_gres.txt",

rule by_gpu_resource:
    output:
        "out/by_gpu_resource.txt",
    resources:
        gpu=1,
    shell:
        "echo CUDA_VISIBLE_DEVICES=$CUDA_VISIBLE_DEVICES > {output}"

rule by_gres:
    output:
        "out/by_gres.txt",
    resources:
        gres="gpu:1",
    shell:
        "echo CUDA_VISIBLE_DEVICES=$CUDA_VISIBLE_DEVICES > {output}"
"""


def _write_snakefile(directory: Path, text: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    snakefile = directory / "Snakefile"
    snakefile.write_text(text)
    return snakefile


def _files(root: Path) -> dict[str, str]:
    return {
        str(path.relative_to(root)): path.read_text()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def _accounted(cluster: SlurmCluster, job_ids: list[str], fields: str) -> list[dict[str, str]]:
    """sacct records of finished jobs; slurmdbd may lag the controller a little."""
    deadline = time.monotonic() + 30
    while True:
        rows = cluster.sacct(job_ids, fields)
        done = [r for r in rows if r.get("State", "COMPLETED") not in ("PENDING", "RUNNING")]
        if len(done) == len(job_ids) or time.monotonic() > deadline:
            return rows
        time.sleep(1)


def _ok(run: SnakemakeRun) -> None:
    assert run.returncode == 0, run.output[-6000:]


@pytest.mark.slurm
def test_sbatch_job_runs_and_is_accounted(slurm_cluster: SlurmCluster, tmp_path: Path) -> None:
    out = tmp_path / "job.out"
    job_id = slurm_cluster.command(
        "sbatch",
        "--parsable",
        "--wait",  # returns when the job has finished
        "--partition",
        slurm_cluster.partition,
        "--output",
        str(out),
        "--wrap",
        "echo hello from $SLURM_JOB_ID on $(hostname -s)",
        timeout=120,
    ).strip()
    assert job_id.isdigit()
    assert out.read_text().startswith(f"hello from {job_id} on ")

    history = slurm_cluster.command("squeue", "--states=all", "-h", "-j", job_id, "-o", "%i %T")
    assert history.split() == [job_id, "COMPLETED"]

    (row,) = _accounted(slurm_cluster, [job_id], "JobID,State,ExitCode,Partition")
    assert row == {
        "JobID": job_id,
        "State": "COMPLETED",
        "ExitCode": "0:0",
        "Partition": slurm_cluster.partition,
    }


@pytest.mark.slurm
def test_workflow_on_slurm_matches_local_run(slurm_cluster: SlurmCluster, tmp_path: Path) -> None:
    snakefile = _write_snakefile(tmp_path / "src", THREE_JOBS)
    on_slurm = slurm_cluster.run_snakemake(tmp_path / "slurm", snakefile, timeout=240)
    local = slurm_cluster.run_snakemake_locally(tmp_path / "local", snakefile, timeout=120)
    _ok(on_slurm)
    _ok(local)

    assert _files(tmp_path / "slurm" / "out") == _files(tmp_path / "local" / "out")
    assert (tmp_path / "slurm" / "out" / "total.txt").read_text() == "210\n"

    # every job went through sbatch: three SLURM job ids, one log each
    assert len(on_slurm.slurm_job_ids) == 3, on_slurm.output
    logs = {log.stem for log in on_slurm.slurm_logs()}
    assert logs == set(on_slurm.slurm_job_ids)
    assert local.slurm_job_ids == []

    rows = _accounted(
        slurm_cluster, on_slurm.slurm_job_ids, "JobID,JobName,State,Partition,AllocCPUS"
    )
    assert {r["State"] for r in rows} == {"COMPLETED"}
    # the partition came from NCAFLOW_SLURM_PARTITION, not the cluster default
    assert {r["Partition"] for r in rows} == {slurm_cluster.partition}
    # cpus_per_task follows the rule's threads: 1, 1 and 2 CPUs
    assert sorted(int(r["AllocCPUS"]) for r in rows) == [1, 1, 2]


@pytest.mark.slurm
def test_failing_job_fails_the_run_without_hanging(
    slurm_cluster: SlurmCluster, tmp_path: Path
) -> None:
    snakefile = _write_snakefile(tmp_path / "src", FAILING)
    run = slurm_cluster.run_snakemake(tmp_path / "run", snakefile, timeout=180)

    assert run.returncode != 0, run.output[-6000:]
    assert run.seconds < 120, f"took {run.seconds:.0f} s to notice the failure"
    assert "Error in rule broken" in run.output
    assert "deliberate failure" in run.output  # the job's log is shown
    assert not (tmp_path / "run" / "out" / "never.txt").exists()  # no partial output
    (job_id,) = run.slurm_job_ids
    (row,) = _accounted(slurm_cluster, [job_id], "JobID,State,ExitCode")
    assert row["State"] == "FAILED"


@pytest.mark.slurm
def test_gpu_rules_get_the_gpu(slurm_cluster: SlurmCluster, tmp_path: Path) -> None:
    snakefile = _write_snakefile(tmp_path / "src", GPU)
    run = slurm_cluster.run_snakemake(tmp_path / "run", snakefile, timeout=240)
    _ok(run)

    assert len(run.slurm_job_ids) == 2
    rows = _accounted(slurm_cluster, run.slurm_job_ids, "JobID,State,AllocTRES")
    for row in rows:
        assert row["State"] == "COMPLETED"
        assert "gres/gpu=1" in row["AllocTRES"].split(","), row
    for name in ("by_gpu_resource", "by_gres"):
        text = (tmp_path / "run" / "out" / f"{name}.txt").read_text()
        assert text.strip() == "CUDA_VISIBLE_DEVICES=0", (name, text)


def test_profile_takes_partition_and_account_from_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The profile as Snakemake reads it; no cluster needed."""
    profiles = pytest.importorskip("snakemake.profiles")

    def parsed() -> dict[str, object]:
        text = (SLURM_PROFILE / "config.yaml").read_text()
        stream = io.StringIO(text)
        stream.name = str(SLURM_PROFILE / "config.yaml")
        return dict(profiles.ProfileConfigFileParser().parse(stream))

    monkeypatch.delenv("NCAFLOW_SLURM_PARTITION", raising=False)
    monkeypatch.delenv("NCAFLOW_SLURM_ACCOUNT", raising=False)
    bare = parsed()
    assert bare["executor"] == "slurm"
    assert bare["retries"] == "0"
    resources = bare["default-resources"]
    assert isinstance(resources, list)
    assert not any(r.startswith(("slurm_partition=", "slurm_account=")) for r in resources)
    assert "cpus_per_task=threads" in resources

    monkeypatch.setenv("NCAFLOW_SLURM_PARTITION", "gpu-a100")
    monkeypatch.setenv("NCAFLOW_SLURM_ACCOUNT", "proj42")
    site = parsed()["default-resources"]
    assert isinstance(site, list)
    assert "slurm_partition=gpu-a100" in site
    assert "slurm_account=proj42" in site
