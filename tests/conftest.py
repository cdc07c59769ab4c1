"""Shared fixtures: the real-data mirror and a quiet, small torch.

Every test finds the mirror of small real datasets through `mirror_path()`:
$NCAFLOW_DATA_MIRROR if set, else ../shared/data beside the repository. The
path is resolved once, when pytest starts (before any test can unset the
variable), and exported as NCAFLOW_DATA_MIRROR so that every subprocess
(Snakemake, DVC, SLURM jobs) reads the same folder. Tests that need it take
the `mirror` fixture: without a mirror they skip on a workstation, and fail in
CI (CI=true), where a skipped end-to-end test would hide a broken set-up.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from workers import worker_group

REPO = Path(__file__).resolve().parents[1]
MIRROR_ENV = "NCAFLOW_DATA_MIRROR"

if not torch.cuda.is_available():
    # Triton kernels (ncaflow.backends.fused) run in Triton's CPU interpreter; read when triton is
    # first imported, so it is set before any test module imports it
    os.environ.setdefault("TRITON_INTERPRET", "1")


def _resolve_mirror() -> Path | None:
    env = os.environ.get(MIRROR_ENV)
    path = Path(env) if env else REPO.parent / "shared" / "data"
    return path.resolve() if path.is_dir() else None


_MIRROR = _resolve_mirror()
if _MIRROR is not None:
    os.environ[MIRROR_ENV] = str(_MIRROR)


def mirror_path() -> Path | None:
    """The data mirror ($NCAFLOW_DATA_MIRROR, else ../shared/data), or None if absent.

    Resolved when this conftest is imported, so a test that unsets the variable
    (the hermetic data tests) does not change it for the tests after it.
    """
    return _MIRROR


def in_ci() -> bool:
    """True on a CI runner (CI set to anything but '', '0' or 'false')."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false")


def require_mirror() -> Path:
    """The mirror; skip without one, or fail in CI, with what to set."""
    path = mirror_path()
    if path is None:
        env = os.environ.get(MIRROR_ENV)
        where = f"{MIRROR_ENV}={env} is not a folder" if env else f"no {REPO.parent}/shared/data"
        message = (
            f"no data mirror ({where}): set {MIRROR_ENV} to the folder of small real "
            "datasets (see tests/conftest.py)"
        )
        if in_ci():
            pytest.fail(f"CI needs the data mirror: {message}", pytrace=False)
        pytest.skip(message)
    return path


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook reads the groups
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        group = worker_group(item.path.relative_to(REPO).as_posix())
        item.add_marker(pytest.mark.xdist_group(group))


@pytest.fixture(autouse=True)
def _small_torch() -> None:
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def mirror() -> Path:
    """The real-data mirror folder (skip without one; fail in CI)."""
    return require_mirror()


@pytest.fixture
def umask_022() -> Iterator[None]:
    """The usual umask (022) for a test that checks the modes of the files it writes."""
    old = os.umask(0o022)
    yield
    os.umask(old)
