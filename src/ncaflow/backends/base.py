"""What a backend is, and what a model hands it.

A backend runs the step of a model it knows only through :class:`Automaton` (so this
package imports no model): its config, its fixed-filter plan and its weights
(:class:`Weights`), gathered by the model at every step or rollout so that gradients
reach them.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import torch
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from ncaflow.backends import fast
from ncaflow.config import ModelConfig

__all__ = ["Automaton", "Backend", "Weights", "needs_grad"]


@dataclass(frozen=True, kw_only=True)
class Weights:
    """The update rule's weights, as the model hands them to a backend.

    w1: (hidden, C*K) first layer, input index c*K + j (channel c, filter j)
    b1: (hidden,) its bias
    w2: (C_upd, hidden) second layer
    kernels: (C*K, 1, k, k) learned depthwise filters, or None for a fixed bank
        (its taps are in the model's plan)
    """

    w1: Tensor
    b1: Tensor
    w2: Tensor
    kernels: Tensor | None


class Automaton(Protocol):
    """What a backend asks of a model (:class:`ncaflow.model.nca.NCA` is one)."""

    config: ModelConfig
    plan: fast.Plan
    n_filters: int
    triton_mlp: bool
    scratch: dict[str, Any]  # a backend's memory between rollouts (workspaces)

    @property
    def structure(self) -> Hashable:
        """What compiled graphs depend on besides input shapes."""
        ...

    def weights(self) -> Weights: ...

    def step_reference(self, x: Tensor, fire: Tensor | None) -> Tensor: ...

    def parameters(self) -> Iterator[torch.nn.Parameter]: ...


def needs_grad(model: Automaton, x: Tensor) -> bool:
    """Whether a step on x must support backward (the fast path then saves its inputs)."""
    return torch.is_grad_enabled() and (
        x.requires_grad or any(p.requires_grad for p in model.parameters())
    )


class Backend:
    """One implementation of the NCA step; a subclass sets ``name`` and :meth:`step`."""

    name: ClassVar[str]
    channels_last: ClassVar[bool] = False  # a plain rollout keeps the state channels-last
    # runs on ATen/MKL kernels, which train.reproducible pins (ncaflow.runtime.reproducible)
    pinned_cpu_kernels: ClassVar[bool] = True

    def step(self, model: Automaton, x: Tensor, fire: Tensor | None) -> Tensor:
        """One step of the (B, C, H, W) state x; fire (B, 1, H, W) 0/1 mask or None."""
        raise NotImplementedError

    def pick(self, x: Tensor) -> Backend:
        """The backend that runs state x: this one, unless it cannot (or chooses per grid)."""
        return self

    def on(self, device: torch.device, sizes: tuple[int, int, int]) -> Backend:
        """The backend a run on ``device`` takes for an MLP of these (in, hidden, out) sizes."""
        return self

    def triton_mlp(self, sizes: tuple[int, int, int]) -> bool:
        """Whether this backend runs an MLP of these sizes as Triton kernels."""
        return False

    def unavailable(self, device: torch.device) -> str | None:
        """Why this backend cannot run on ``device`` ("needs ..."), or None."""
        return None

    def rollout(
        self,
        model: Automaton,
        x: Tensor,
        masks: Iterator[Tensor | None],
        callback: Callable[[int, Tensor], None] | None,
        checkpoint_every: int,
    ) -> Tensor:
        """One :meth:`step` per mask from the (B, C, H, W) state x; with checkpoint_every > 0
        (and gradients, no callback) the steps are recomputed in chunks of that many during
        backward. Masks are drawn outside checkpointed chunks, so recomputation is exact."""
        if self.channels_last:  # what gemm_step reads and writes
            x = x.contiguous(memory_format=torch.channels_last)
        t = 0
        while drawn := list(
            itertools.islice(masks, checkpoint_every if checkpoint_every > 0 else None)
        ):
            # drawn outside the checkpoint: recomputed exactly
            if checkpoint_every > 0 and torch.is_grad_enabled() and callback is None:
                x = checkpoint(self._chunk, model, x, *drawn, use_reentrant=False)
            else:
                for i, m in enumerate(drawn):
                    x = self.step(model, x, m)
                    if callback is not None:
                        callback(t + i + 1, x)
            t += len(drawn)
        return x.contiguous() if self.channels_last else x

    def _chunk(self, model: Automaton, x: Tensor, *masks: Tensor | None) -> Tensor:
        for m in masks:
            x = self.step(model, x, m)
        return x
