"""Shared fixtures: the real-data mirror in ../shared/data and a quiet, small torch."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]

if not torch.cuda.is_available():
    # Triton kernels (ncaflow.backends.fused) run in Triton's CPU interpreter; read when triton is
    # first imported, so it is set before any test module imports it
    os.environ.setdefault("TRITON_INTERPRET", "1")


def mirror_path() -> Path | None:
    """The data mirror: $NCAFLOW_DATA_MIRROR, else ../shared/data beside the repository."""
    env = os.environ.get("NCAFLOW_DATA_MIRROR")
    path = Path(env) if env else REPO.parent / "shared" / "data"
    return path if path.is_dir() else None


@pytest.fixture(autouse=True)
def _small_torch() -> None:
    torch.set_num_threads(1)


@pytest.fixture
def mirror() -> Path:
    path = mirror_path()
    if path is None:
        pytest.skip("no data mirror: set NCAFLOW_DATA_MIRROR or provide ../shared/data")
    return path
