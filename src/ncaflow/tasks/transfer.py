"""Host-made random draws on their way to the training device, without a synchronisation.

The tasks draw their batch indices, flips and shifts from a CPU generator (so that a seeded
run draws the same batches on any device). A plain ``.to("cuda")`` of such a tensor copies
from pageable memory, which waits for every kernel already queued: one stall of the host per
draw, several per training iteration. ``upload`` copies through pinned memory instead, queued
behind the work in flight like a kernel; the values are the same.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["upload"]


def upload(t: Tensor, device: torch.device | str) -> Tensor:
    """``t`` (on the CPU) on ``device``: itself on the CPU, else an asynchronous pinned copy.

    The caching host allocator keeps the pinned buffer until the copy has run, so ``t`` may
    be dropped at once."""
    device = torch.device(device)
    if device.type != "cuda" or t.device.type != "cpu":
        return t.to(device)
    return t.pin_memory().to(device, non_blocking=True)
