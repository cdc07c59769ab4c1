"""What is committed, not what the README's main job rewrote.

`snakemake --cores all` retrains the main job's models and rewrites results/tables/ in the
working tree; on another CPU the numbers differ slightly. Tests that check the README's quoted
numbers read the tables as git holds them (the index: a fresh clone's HEAD, or what a developer
staged), and fall back to the working tree only outside a git checkout (an unpacked sdist).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _in_git() -> bool:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        return False
    probe = subprocess.run(
        ["git", "rev-parse", "--is-inside-work-tree"], cwd=ROOT, capture_output=True, text=True
    )
    return probe.returncode == 0


IN_GIT = _in_git()


def committed_text(path: str) -> str:
    """The text of `path` (relative to the repository root) as git's index holds it."""
    if not IN_GIT:
        return (ROOT / path).read_text()
    shown = subprocess.run(
        ["git", "show", f":{path}"], cwd=ROOT, capture_output=True, text=True, check=False
    )
    if shown.returncode != 0:
        raise FileNotFoundError(f"{path} is not committed: {shown.stderr.strip()}")
    return shown.stdout
