"""How the suite spreads over pytest-xdist workers (used by tests/conftest.py's hook)."""

from __future__ import annotations

_APT_MODULES = ("tests/slurm/", "tests/export/test_cortex_m.py")


def worker_group(module: str) -> str:
    """The pytest-xdist group of a test module (its path from the repository root).

    Under pytest-xdist (addopts: ``-n auto --dist loadgroup``) a group runs whole in one worker.
    A module is its own group, so its module fixtures (a tiny workflow run, DVC clones) are
    built once. The modules that may apt-get install what they need (the SLURM cluster, which
    its two modules share, and the Cortex-M toolchain) share one: dpkg takes one install at a
    time, and one cluster runs per machine."""
    return "apt" if module.startswith(_APT_MODULES) else module
