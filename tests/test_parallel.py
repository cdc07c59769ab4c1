"""The suite's own parallel run (pytest-xdist, tests/conftest.py): a module stays in one worker,
and the modules that share a machine-wide resource share one."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from workers import worker_group

REPO = Path(__file__).resolve().parents[1]
FAST = ["tests/config/test_parse.py", "tests/backends/test_stencil.py"]


def test_each_module_runs_whole_in_one_worker() -> None:
    """Two workers, two modules: every test carries its module's group, so the grouping ran
    before xdist's own hook read the groups (after it, tests spread one by one)."""
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-n", "2", "-v", "-p", "no:cacheprovider", *FAST],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:]
    ran = re.findall(r"^\[(gw\d)\] \[\s*\d+%\] PASSED (\S+?)::\S+@(\S+)\s*$", done.stdout, re.M)
    assert {module for _, module, _ in ran} == set(FAST), done.stdout[-3000:]
    for worker, module, group in ran:
        assert group == module
        assert all(w == worker for w, m, _ in ran if m == module), f"{module} split"


def test_the_apt_installing_modules_share_one_group() -> None:
    apt = {
        worker_group(m)
        for m in (
            "tests/slurm/test_slurm_cluster.py",
            "tests/slurm/test_workflow_on_slurm.py",
            "tests/export/test_cortex_m.py",
        )
    }
    assert apt == {"apt"}
    assert worker_group("tests/export/test_c.py") == "tests/export/test_c.py"
