"""A real single-node SLURM cluster for the tests in this directory.

The session-scoped fixture ``slurm_cluster`` runs ``tests/slurm/cluster.sh start``
in a short temporary directory (unix socket paths must stay short), yields a
:class:`SlurmCluster`, and runs ``cluster.sh stop`` at the end of the session,
failing the teardown if a daemon outlives it.  It skips when the cluster cannot
be had on this machine (not Linux, not root, or packages missing and no apt-get).

A test that runs a workflow through SLURM and compares it with a local run::

    @pytest.mark.slurm
    def test_tiny_on_slurm(slurm_cluster, tmp_path):
        on_slurm = slurm_cluster.run_snakemake(tmp_path / "slurm", REPO / "Snakefile",
                                               ["--configfile", ".test/config/config.yaml"])
        local = slurm_cluster.run_snakemake_locally(tmp_path / "local", REPO / "Snakefile",
                                                    ["--configfile", ".test/config/config.yaml"])
        assert on_slurm.returncode == 0, on_slurm.output
        assert on_slurm.slurm_job_ids

The same functions, :func:`run_snakemake_on_slurm` and :func:`run_snakemake_locally`,
take an explicit ``env``.  Environment knobs: NCAFLOW_SLURM_DIR (use this cluster
directory and keep it afterwards: a second start is faster), NCAFLOW_SLURM_KEEP=1
(keep the temporary directory, for reading the daemon logs in DIR/log).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CLUSTER_SH = Path(__file__).resolve().parent / "cluster.sh"
SLURM_PROFILE = REPO / "workflow" / "profiles" / "slurm"

# Daemons and clients the cluster needs; cluster.sh installs them if missing.
_BINARIES = ("slurmctld", "slurmd", "slurmdbd", "sbatch", "sacct", "munged", "mariadbd")
_START_TIMEOUT_S = 900  # includes apt-get install on a fresh machine
_STOP_TIMEOUT_S = 120
_JOBID_RE = re.compile(r"submitted with SLURM jobid (\d+)")


@dataclass(frozen=True)
class SnakemakeRun:
    """What one Snakemake invocation did."""

    returncode: int
    output: str  # stdout and stderr, interleaved
    seconds: float
    workdir: Path
    slurm_job_ids: list[str] = field(default_factory=list)

    def slurm_logs(self) -> list[Path]:
        """The per-job SLURM logs the plugin kept under .snakemake/slurm_logs."""
        return sorted((self.workdir / ".snakemake" / "slurm_logs").rglob("*.log"))


def run_snakemake(
    workdir: Path,
    snakefile: Path,
    args: Sequence[str],
    *,
    env: Mapping[str, str],
    timeout: float,
) -> SnakemakeRun:
    """Run ``snakemake --snakefile SNAKEFILE --directory WORKDIR ARGS`` with a hard timeout.

    On timeout Snakemake gets SIGINT (it then cancels its SLURM jobs), 30 s later
    SIGKILL, and the test fails with the output so far.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        "--snakefile",
        str(snakefile),
        "--directory",
        str(workdir),
        *args,
    ]
    start = time.monotonic()
    with tempfile.TemporaryFile() as log:  # not in workdir: tests compare its files
        proc = subprocess.Popen(
            cmd,
            cwd=workdir,
            env=dict(env),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            returncode = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGINT)  # not SIGTERM: SIGINT cancels the SLURM jobs
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            log.seek(0)
            pytest.fail(
                f"snakemake did not finish within {timeout:.0f} s: {' '.join(cmd)}\n"
                + log.read().decode(errors="replace")[-8000:]
            )
        log.seek(0)
        output = log.read().decode(errors="replace")
    return SnakemakeRun(
        returncode=returncode,
        output=output,
        seconds=time.monotonic() - start,
        workdir=workdir,
        slurm_job_ids=_JOBID_RE.findall(output),
    )


def run_snakemake_on_slurm(
    workdir: Path,
    snakefile: Path,
    extra_args: Sequence[str] = (),
    *,
    env: Mapping[str, str],
    timeout: float = 600,
) -> SnakemakeRun:
    """Run a workflow through ``workflow/profiles/slurm`` on the cluster that ``env`` names.

    ``env`` must carry SLURM_CONF (and NCAFLOW_SLURM_PARTITION if the jobs should
    go to a particular partition): use ``slurm_cluster.env``.  On top of the
    profile: status checks start after 2 s, not 20 s (test jobs take seconds),
    and the SLURM logs of successful jobs are kept in .snakemake/slurm_logs.
    """
    args = [
        "--profile",
        str(SLURM_PROFILE),
        "--slurm-init-seconds-before-status-checks",
        "2",
        "--slurm-keep-successful-logs",
        *extra_args,
    ]
    return run_snakemake(workdir, snakefile, args, env=env, timeout=timeout)


def run_snakemake_locally(
    workdir: Path,
    snakefile: Path,
    extra_args: Sequence[str] = (),
    *,
    env: Mapping[str, str] | None = None,
    cores: int = 2,
    timeout: float = 600,
) -> SnakemakeRun:
    """Run a workflow on this machine (``--cores N``), for comparison with a SLURM run."""
    args = ["--cores", str(cores), "--workflow-profile", "none", *extra_args]
    return run_snakemake(
        workdir, snakefile, args, env=os.environ if env is None else env, timeout=timeout
    )


@dataclass(frozen=True)
class SlurmCluster:
    """A running single-node cluster, as ``cluster.sh start`` left it.

    ``exports`` are the variables ``cluster.sh start`` printed (SLURM_CONF,
    NCAFLOW_SLURM_PARTITION); ``env`` is os.environ plus those, ready for
    subprocess calls.  The node has 1 fake GPU (gres gpu, File=/dev/null) and two
    partitions on it: ``main`` (the default) and ``debug`` (``partition``), which
    the SLURM profile picks up from NCAFLOW_SLURM_PARTITION.
    """

    directory: Path
    exports: dict[str, str]
    env: dict[str, str]

    @property
    def partition(self) -> str:
        return self.exports["NCAFLOW_SLURM_PARTITION"]

    def command(self, *args: str, timeout: float = 60) -> str:
        """Run a SLURM client command (sbatch, squeue, sacct, ...) and return its stdout."""
        result = subprocess.run(
            list(args), env=self.env, capture_output=True, text=True, timeout=timeout
        )
        if result.returncode != 0:
            raise AssertionError(
                f"{' '.join(args)} failed ({result.returncode}):\n{result.stdout}{result.stderr}"
            )
        return result.stdout

    def sacct(self, job_ids: Sequence[str], fields: str) -> list[dict[str, str]]:
        """Accounting records (allocations only, no steps) of the given jobs."""
        out = self.command("sacct", "-X", "-P", "-n", "-j", ",".join(job_ids), "-o", fields)
        names = fields.split(",")
        return [dict(zip(names, line.split("|"), strict=True)) for line in out.splitlines()]

    def run_snakemake(
        self, workdir: Path, snakefile: Path, extra_args: Sequence[str] = (), timeout: float = 600
    ) -> SnakemakeRun:
        return run_snakemake_on_slurm(workdir, snakefile, extra_args, env=self.env, timeout=timeout)

    def run_snakemake_locally(
        self,
        workdir: Path,
        snakefile: Path,
        extra_args: Sequence[str] = (),
        cores: int = 2,
        timeout: float = 600,
    ) -> SnakemakeRun:
        return run_snakemake_locally(
            workdir, snakefile, extra_args, env=self.env, cores=cores, timeout=timeout
        )


def _skip_reason() -> str | None:
    if not sys.platform.startswith("linux"):
        return "the SLURM test cluster needs Linux"
    if os.geteuid() != 0:
        return "the SLURM test cluster needs root (its daemons run as root)"
    missing = [b for b in _BINARIES if shutil.which(b) is None]
    if missing and shutil.which("apt-get") is None:
        return f"SLURM packages missing ({', '.join(missing)}) and no apt-get to install them"
    if shutil.which("snakemake") is None:
        return "snakemake is not installed (pip install -e '.[workflow]')"
    return None


def _parse_exports(text: str) -> dict[str, str]:
    exports = {}
    for line in text.splitlines():
        match = re.fullmatch(r"export (\w+)=(.*)", line.strip())
        if match:
            exports[match[1]] = match[2]
    return exports


def _recorded_pids(directory: Path) -> dict[str, int]:
    pids = {}
    for pidfile in (directory / "run").glob("*.pid"):
        try:
            pids[pidfile.stem] = int(pidfile.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            continue
    return pids


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is dead for our purposes
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split(")")[-1].split()[0] == "Z")


@pytest.fixture(scope="session")
def slurm_cluster() -> Iterator[SlurmCluster]:
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    fixed = os.environ.get("NCAFLOW_SLURM_DIR")
    directory = Path(fixed) if fixed else Path(tempfile.mkdtemp(prefix="ncaslurm-", dir="/tmp"))
    keep = bool(fixed) or os.environ.get("NCAFLOW_SLURM_KEEP") == "1"
    try:
        started = subprocess.run(
            ["bash", str(CLUSTER_SH), "start", str(directory)],
            capture_output=True,
            text=True,
            timeout=_START_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired as err:
        _stop(directory)
        pytest.fail(f"cluster.sh start did not finish in {_START_TIMEOUT_S} s: {err.stderr!r}")
    if started.returncode != 0:
        _stop(directory)
        pytest.fail(f"cluster.sh start failed:\n{started.stderr[-6000:]}")
    exports = _parse_exports(started.stdout)
    # the eager perception in the jobs, as tests/workflow/test_workflow.py's WORKFLOW_ENV says
    env = {"NCAFLOW_COMPILE": "0", **os.environ, **exports}
    cluster = SlurmCluster(directory=directory, exports=exports, env=env)
    try:
        yield cluster
    finally:
        pids = _recorded_pids(directory)
        stopped = _stop(directory)
        survivors = {name: pid for name, pid in pids.items() if _alive(pid)}
        if not keep and not survivors:
            shutil.rmtree(directory, ignore_errors=True)
        if stopped.returncode != 0 or survivors:
            pytest.fail(
                f"cluster.sh stop left daemons running: {survivors} "
                f"(rc {stopped.returncode}):\n{stopped.stderr[-3000:]}"
            )


def _stop(directory: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(CLUSTER_SH), "stop", str(directory)],
        capture_output=True,
        text=True,
        timeout=_STOP_TIMEOUT_S,
    )
