"""Which job a checkpoint belongs to (``ncaflow train --restart-changed``).

A workflow job that is killed leaves ``checkpoint.safetensors`` in its output folder; the
re-started job resumes from it. If the job's config changed in between (the run config
file, a ``--set``, the folds), that checkpoint belongs to another run: it is removed with
its TensorBoard events and training starts afresh. The job's key, a hash of what it was
given, is kept beside the checkpoint in ``checkpoint.key`` while it trains.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Sequence
from pathlib import Path

from ncaflow.guard.io import atomic_write
from ncaflow.training.resume import CHECKPOINT, OLD_CHECKPOINT

__all__ = ["KEY_FILE", "claim", "job_key", "release"]

KEY_FILE = "checkpoint.key"


def job_key(config: str | Path, options: Sequence[str]) -> str:
    """16 hex digits: the run config file's bytes and the options given with it."""
    h = hashlib.sha256(Path(config).read_bytes())
    h.update(json.dumps(list(options)).encode())
    return h.hexdigest()[:16]


def claim(out: Path, key: str) -> bool:
    """Before training into ``out``: keep a checkpoint that the job of ``key`` left there
    (True: it resumes) or remove one of another job, and any TensorBoard events with it
    (False: it starts afresh); then record ``key``. Links are removed, never followed."""
    keyed = out / KEY_FILE
    same = (out / CHECKPOINT).is_file() and _read(keyed) == key
    if not same:
        for name in (CHECKPOINT, OLD_CHECKPOINT):
            (out / name).unlink(missing_ok=True)
        board = out / "tensorboard"
        if board.is_symlink() or board.is_file():
            board.unlink()
        elif board.is_dir():
            shutil.rmtree(board)
    atomic_write(keyed, lambda tmp: tmp.write_text(key + "\n", encoding="utf-8"))
    return same


def release(out: Path) -> None:
    """After a finished run: the checkpoint is gone, and so is its key."""
    (out / KEY_FILE).unlink(missing_ok=True)


def _read(path: Path) -> str | None:
    if path.is_symlink() or not path.is_file():
        return None
    return path.read_text(encoding="utf-8").strip()
