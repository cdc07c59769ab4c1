"""Writing files that someone else's input cannot redirect, and text that cannot hijack a terminal.

A leaf module (it imports nothing of ncaflow), used wherever ncaflow writes:

- :func:`open_nofollow`: open a file inside an output folder without following a
  symbolic link planted there (``O_NOFOLLOW``); :func:`no_symlink` refuses a linked folder.
- :func:`refuse_input`: an ``--out`` that resolves to one of the command's inputs
  (the model's files, an image, the run config, the folds file) is refused.
- :func:`file_mode` and :func:`publish`: written files get ``0666 & ~umask`` (0644
  under the usual umask 022), not the 0600 of a temporary file.
- :func:`clip` and :func:`printable`: values shown in a message are cut to a few dozen
  characters and control characters (ESC, newline) are escaped.
"""

from __future__ import annotations

import errno
import os
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

__all__ = [
    "UnsafePath",
    "clip",
    "dir_mode",
    "file_mode",
    "no_symlink",
    "open_nofollow",
    "printable",
    "publish",
    "refuse_input",
]


class UnsafePath(RuntimeError):
    """A write would follow a planted symbolic link or overwrite one of the inputs."""


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def file_mode() -> int:
    """The mode a newly created file gets: ``0o666`` minus the process's umask."""
    return 0o666 & ~_umask()


def dir_mode() -> int:
    """The mode a newly created folder gets: ``0o777`` minus the process's umask (``mkdtemp``
    makes them 0700)."""
    return file_mode() | (0o111 & ~_umask())


def publish(path: str | Path) -> None:
    """Give a finished temporary file (``mkstemp`` makes them 0600) the usual mode."""
    os.chmod(path, file_mode())


def open_nofollow(path: str | Path, flags: int, mode: int = 0o644) -> int:
    """``os.open`` that refuses a symbolic link at ``path`` (returns the descriptor).

    Raises UnsafePath naming the link and the fix.
    """
    try:
        return os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    except OSError as err:
        if err.errno == errno.ELOOP or (err.errno == errno.EMLINK and os.path.islink(path)):
            raise _linked(Path(path)) from None
        raise


def no_symlink(path: str | Path) -> None:
    """Raise UnsafePath when ``path`` is a symbolic link (to a file or a folder)."""
    if os.path.islink(path):
        raise _linked(Path(path))


def _linked(path: Path) -> UnsafePath:
    return UnsafePath(
        f"{path}: is a symbolic link (to {clip(os.readlink(path))}); ncaflow does not write "
        "through a link in an output folder; remove the link or use another --out"
    )


def refuse_input(out: str | Path, inputs: Iterable[tuple[str | Path, str]]) -> None:
    """Refuse an output path that resolves (``realpath``) to one of ``inputs``.

    ``inputs``: (path, what it is) pairs, e.g. ``(model.json, "the model's JSON")``.
    """
    target = os.path.realpath(out)
    for path, what in inputs:
        if os.path.realpath(path) == target:
            raise UnsafePath(
                f"--out {clip(str(out))}: is {what} ({clip(str(path))}), an input of this "
                "command, and would be overwritten; choose another --out"
            )


def clip(text: object, limit: int = 60) -> str:
    """``repr``-free text of ``text``, escaped and cut to ``limit`` characters."""
    shown = printable(str(text))
    return shown if len(shown) <= limit else f"{shown[: limit - 20]}...({len(shown)} chars)"


def printable(text: str) -> str:
    """``text`` with control characters (ESC, newline, DEL, ...) escaped as ``\\x1b``."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def atomic_write(path: str | Path, write: Callable[[Path], object]) -> None:
    """Call ``write(tmp)`` on a temp file next to ``path``, then rename it into place.

    Nothing is left behind on failure; an OSError (disk full, read-only) names ``path``.
    The file gets the mode of any new file (0644 under umask 022); a symbolic link
    planted at ``path`` is replaced, not followed.
    """
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        write(Path(tmp))
        publish(tmp)  # mkstemp made it 0600: give it 0666 & ~umask like any new file
        os.replace(tmp, path)  # replaces a symbolic link at `path`, never follows it
    except BaseException as err:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        if isinstance(err, OSError) and err.errno is not None:  # name the file, not the temp
            raise OSError(err.errno, err.strerror, str(path)) from err
        raise
