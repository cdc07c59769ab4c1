"""Fixtures for the ncaflow.data tests: the shared real-data mirror and a network guard."""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import torch

_REPO = Path(__file__).resolve().parents[2]
# Read once at import, before any test deletes the variable.
_SHARED = Path(os.environ.get("NCAFLOW_DATA_MIRROR") or _REPO / ".." / "shared" / "data")

torch.set_num_threads(1)


@pytest.fixture
def shared_mirror() -> Path:
    """The folder of small real dataset copies (skip if this machine has none)."""
    if not (_SHARED / "README.md").is_file():
        pytest.skip(f"no shared data mirror at {_SHARED} (set NCAFLOW_DATA_MIRROR)")
    return _SHARED


@pytest.fixture(autouse=True)
def _hermetic(monkeypatch: pytest.MonkeyPatch) -> None:
    """No mirror from the environment and no real network in any test."""
    monkeypatch.delenv("NCAFLOW_DATA_MIRROR", raising=False)

    def offline(*args: object, **kwargs: object) -> None:
        raise urllib.error.URLError("network disabled in tests")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
