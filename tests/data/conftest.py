"""Fixtures for the ncaflow.data tests: the shared real-data mirror and a network guard."""

from __future__ import annotations

import urllib.error
import urllib.request
from pathlib import Path

import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture
def shared_mirror(mirror: Path) -> Path:
    """The folder of small real dataset copies: tests/conftest.py's `mirror`, found by
    `mirror_path()` before this module's hermetic fixture unsets the variable."""
    return mirror


@pytest.fixture(autouse=True)
def _hermetic(monkeypatch: pytest.MonkeyPatch) -> None:
    """No mirror from the environment and no real network in any test."""
    monkeypatch.delenv("NCAFLOW_DATA_MIRROR", raising=False)

    def offline(*args: object, **kwargs: object) -> None:
        raise urllib.error.URLError("network disabled in tests")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
