"""The bad-input corpus: every case feeds ncaflow one bad input and asserts how it fails.

A case passes when the command exits non-zero with one short line on stderr that names
what was wrong (file, key) and what to do, with no Python traceback, and leaves no
finished-looking output behind.  ``cli`` runs ``ncaflow`` in this process (fast);
``cli_process`` runs it as a subprocess, for signals and for what the console script
itself prints.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pytest

from ncaflow.cli import main

REPO = Path(__file__).resolve().parents[2]


@dataclass
class Outcome:
    code: int
    out: str
    err: str

    def fails_cleanly(self, *needles: str, absent: Iterable[Path] = ()) -> None:
        """Exit code != 0; stderr one line mentioning every needle; no traceback; no output."""
        assert self.code != 0, f"exited 0 on a bad input; stdout: {self.out!r}"
        assert "Traceback" not in self.err, self.err
        lines = [line for line in self.err.splitlines() if line.strip()]
        assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}:\n{self.err}"
        for needle in needles:
            assert needle in lines[0], f"{needle!r} not in {lines[0]!r}"
        for path in absent:
            assert not Path(path).exists(), f"{path} was written although the command failed"


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]):
    """``cli("train", "--config", ...)``: run ncaflow in-process, return an Outcome."""

    def run(*argv: str | Path) -> Outcome:
        capsys.readouterr()
        try:
            code = main([str(a) for a in argv])
        except SystemExit as stop:  # argparse's own errors
            code = stop.code if isinstance(stop.code, int) else 1
        captured = capsys.readouterr()
        return Outcome(code, captured.out, captured.err)

    return run


def cli_process(*argv: str | Path, timeout: float = 120, **kwargs) -> Outcome:
    """Run ``python -m ncaflow.cli`` in a subprocess (kwargs go to subprocess.run)."""
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), **kwargs.pop("env", {})}
    options = {"capture_output": True, "text": True, "timeout": timeout, **kwargs}
    proc = subprocess.run(
        [sys.executable, "-m", "ncaflow.cli", *map(str, argv)], env=env, **options
    )
    return Outcome(proc.returncode, proc.stdout or "", proc.stderr or "")
