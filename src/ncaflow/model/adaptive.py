"""Adaptive step count: stop each sample's inference rollout once its state settles.

The rule (``model.adaptive_steps``: tol, patience, min_steps; the C export runs the same):

- after step t (t = 1, 2, ...), a sample's change is the largest ``|x_t - x_{t-1}|`` over
  its updatable channels and every cell (the L-infinity norm);
- a step with change < tol is quiet; ``patience`` quiet steps in a row, once t >=
  ``min_steps``, stop that sample: its state is frozen from then on, the others go on;
- a rollout never runs longer than the length asked for (its ``steps``).

Fire masks: the maximum is not diluted by the cells that did not fire (a mean over all
cells shrinks with the fire rate, so its threshold would too); a cell still changing that
happens not to fire for ``patience`` steps in a row (probability (1 - fire_rate)^patience)
can end a rollout early, which is what ``patience`` is for.

What NCALab's ``AutoStepper`` (0.5.1) gets wrong, and this rule does not:

1. every loop iteration restarts from the input (``nca(x, steps=min_steps)``): it
   compares two independent rollouts of min_steps steps, so its score measures fire-mask
   noise, never convergence, and each "step" costs min_steps steps;
2. its score is a mean over the whole batch: one busy sample keeps every sample running,
   and nothing is stopped (or frozen) per sample;
3. the quiet-step counter and the stored states live on the object and are never reset:
   a second ``run`` starts with the first one's streak;
4. reaching max_steps without a plateau falls off the loop and returns None (the range
   stops at max_steps - 1, before the ``step >= max_steps`` check can fire);
5. the mean over all cells (of the hidden channels only) scales with the fire rate.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ncaflow.config import AdaptiveStepsConfig

__all__ = ["Stopper"]


class Stopper:
    """The stopping rule's state for one rollout of B samples.

    ``active``: (B,) bool, the samples still running; ``taken``: (B,) int64, the steps each
    ran so far (its final count once it stopped).
    """

    def __init__(self, *, rule: AdaptiveStepsConfig, batch: int, device: torch.device) -> None:
        self.rule = rule
        self.active = torch.ones(batch, dtype=torch.bool, device=device)
        self.taken = torch.zeros(batch, dtype=torch.int64, device=device)
        self.quiet = torch.zeros(batch, dtype=torch.int64, device=device)

    def advance(self, before: Tensor, after: Tensor, first_updated: int) -> Tensor:
        """One step of every sample: before/after (B, C, H, W) states. Returns the new state,
        ``after`` for running samples and ``before`` for stopped ones (frozen)."""
        change = (after - before)[:, first_updated:].abs().amax(dim=(1, 2, 3))  # (B,)
        quiet = change < self.rule.tol
        self.quiet = torch.where(quiet, self.quiet + 1, torch.zeros_like(self.quiet))
        self.taken += self.active.long()
        state = torch.where(self.active.view(-1, 1, 1, 1), after, before)
        done = (self.taken >= self.rule.min_steps) & (self.quiet >= self.rule.patience)
        self.active &= ~done
        return state
