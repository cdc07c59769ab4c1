"""A training run's TensorBoard event file, whose write failures read like any other.

TensorBoard writes events from a background thread; when that thread fails (disk full,
a read-only folder) it stores the error, lets Python print the thread's traceback, and
the writer's next call raises the error again in the trainer. :class:`Board` keeps the
thread quiet and turns the re-raised error into ``on_error(folder, err)``, the trainer's
one-line error, so a full disk while logging reads like a full disk while checkpointing.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch import Tensor

__all__ = ["Board"]

_WRITER_THREAD = "_AsyncWriterThread"  # tensorboard.summary.writer.event_file_writer


class Board:
    """``with Board(folder, purge_step, on_error) as board:`` scalars and images into
    ``folder``; the writer thread's own report is muted only inside the block, and the
    event file is closed (flushed) when it ends."""

    def __init__(
        self,
        folder: Path,
        purge_step: int | None,
        on_error: Callable[[Path, OSError], Exception],
    ) -> None:
        self.folder, self._purge_step, self._on_error = folder, purge_step, on_error
        self._writer: Any = None
        self._hook: Any = None

    def __enter__(self) -> Board:
        from torch.utils.tensorboard import SummaryWriter  # slow import: only when training

        previous = self._hook = threading.excepthook

        def hook(args: threading.ExceptHookArgs) -> None:
            if type(args.thread).__name__ != _WRITER_THREAD:
                previous(args)  # the writer re-raises its thread's error: no second report

        threading.excepthook = hook  # before the writer's thread starts: it writes at once
        try:
            self._writer = self._call(
                SummaryWriter, log_dir=str(self.folder), purge_step=self._purge_step
            )
        except BaseException:
            threading.excepthook = previous
            raise
        return self

    def __exit__(self, kind: type[BaseException] | None, *rest: object) -> None:
        try:
            self._call(self._writer.close)
        except Exception:
            if kind is None:
                raise  # a clean run whose last events cannot be written fails
            # else the error already on its way out says more
        finally:
            threading.excepthook = self._hook

    def scalar(self, tag: str, value: float, step: int) -> None:
        self._call(self._writer.add_scalar, tag, value, step)

    def images(self, tag: str, images: Tensor, step: int) -> None:
        """images: (N, C, H, W) in [0, 1]."""
        self._call(self._writer.add_images, tag, images, step)

    def _call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except OSError as err:
            raise self._on_error(self.folder, err) from None
