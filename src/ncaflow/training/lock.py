"""One writer per output folder: an advisory ``flock`` on a lock file inside it.

``with folder_lock(out): ...`` holds ``out/train.lock`` (it holds the writer's pid)
for the block; a second writer fails at once with :class:`FolderLocked`. The
kernel drops the lock when its process ends however it ends, so a lock file left
by a killed process blocks nobody. POSIX only (``fcntl``).
"""

from __future__ import annotations

import errno
import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ncaflow.runtime.safe_io import open_nofollow

__all__ = ["LOCK", "FolderLocked", "folder_lock"]

LOCK = "train.lock"


class FolderLocked(RuntimeError):
    """Another process writes to this folder."""


def _holder(fd: int) -> str:
    try:
        return os.pread(fd, 32, 0).decode().strip() or "?"
    except (OSError, UnicodeDecodeError):
        return "?"


@contextmanager
def folder_lock(folder: str | Path) -> Iterator[Path]:
    """Hold ``folder/train.lock`` exclusively for the ``with`` block; yields its path.

    The file is removed on release. Removing it while another process waits to
    lock it would give the two different files, so after locking, the lock is
    only kept if the path still names the locked file (else it retries).
    """
    path = Path(folder) / LOCK
    while True:
        fd = open_nofollow(path, os.O_RDWR | os.O_CREAT)  # a planted link: UnsafePath
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            if err.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                os.close(fd)
                raise
            pid = _holder(fd)
            os.close(fd)
            raise FolderLocked(
                f"another ncaflow train is writing to {folder} (pid {pid}); "
                "wait for it or use another --out"
            ) from None
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # the holder before us removed it: lock the new one
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield path
    finally:
        path.unlink(missing_ok=True)
        os.close(fd)
