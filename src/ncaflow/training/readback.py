"""Each training iteration's mean loss and learning rate on the host, without stalling a GPU.

Reading a CUDA tensor (``.item()``, ``float()``) waits for every kernel queued before it, so a
loop that reads each iteration's loss at once keeps the host from preparing the next batch
while the GPU works. Here the loss is copied into pinned memory behind its iteration's work
and read one iteration later; on the CPU it is read at once. The values are the same either
way; on CUDA a non-finite loss is reported one iteration later (before any evaluation or
checkpoint, which read every pending loss first).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator

import torch
from torch import Tensor


class LossReadback:
    """Queue ``push(n, losses, lr)`` after iteration n; ``ready()`` yields (n, loss, lr)."""

    def __init__(self, *, device: torch.device) -> None:
        self.defer = device.type == "cuda"
        self._pending: deque[tuple[int, Tensor, float, torch.cuda.Event | None]] = deque()

    def push(self, n: int, losses: Tensor, lr: float) -> None:
        """Iteration n's per-sample ``losses`` (B,), averaged and queued for the host."""
        mean = losses.detach().mean()
        if not self.defer:
            self._pending.append((n, mean, lr, None))
            return
        host = torch.empty((), dtype=mean.dtype, pin_memory=True)
        host.copy_(mean, non_blocking=True)
        event = torch.cuda.Event()
        event.record()
        self._pending.append((n, host, lr, event))

    def ready(self, *, flush: bool = False) -> Iterator[tuple[int, float, float]]:
        """The queued iterations whose loss can be read now: on CUDA all but the newest
        (every one with ``flush``), waiting only for their own work; on the CPU all."""
        keep = 1 if self.defer and not flush else 0
        while len(self._pending) > keep:
            n, value, lr, event = self._pending.popleft()
            if event is not None:
                event.synchronize()
            yield n, float(value.item()), lr


def current_lr(
    opt: torch.optim.Optimizer, sched: torch.optim.lr_scheduler.LRScheduler, base: float
) -> float:
    """The learning rate the next step uses, as a float. A capturable optimiser keeps it in a
    device tensor: then it is ``base`` (train.lr) times the schedule's factor, not read back."""
    lr = opt.param_groups[0]["lr"]
    if not isinstance(lr, Tensor):
        return float(lr)
    assert isinstance(sched, torch.optim.lr_scheduler.LambdaLR)  # build_scheduler's kind
    return base * float(sched.lr_lambdas[0](sched.last_epoch))
