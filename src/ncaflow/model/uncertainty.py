"""Uncertainty from the automaton's own randomness: N rollouts that differ only in fire masks
(:func:`stochastic_rollouts`), or the last W steps of one rollout (:func:`step_window`).

The per-pixel mean and variance of a task's prediction map over the rollouts (or steps)
give heatmaps; for segmentation, how well the variance ranks wrong pixels is
measured as the AUROC of (pixel is wrong) against (pixel variance).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor, nn

__all__ = ["error_auroc", "step_window", "stochastic_rollouts"]


class _Moments:
    """Running sum and sum of squares (float64) of equally shaped readouts."""

    def __init__(self) -> None:
        self.n = 0
        self.total: Tensor | None = None
        self.total_sq: Tensor | None = None

    def add(self, value: Tensor) -> None:
        p = value.double()
        self.n += 1
        self.total = p.clone() if self.total is None else self.total + p
        self.total_sq = p * p if self.total_sq is None else self.total_sq + p * p

    def mean_var(self) -> tuple[Tensor, Tensor]:
        """(mean, unbiased variance), float32; needs two or more values."""
        assert self.total is not None and self.total_sq is not None and self.n >= 2
        mean = self.total / self.n
        var = (self.total_sq / self.n - mean * mean).clamp(min=0.0) * self.n / (self.n - 1)
        return mean.float(), var.float()


@torch.no_grad()
def stochastic_rollouts(
    model: nn.Module,
    state: Tensor,
    steps: int,
    *,
    n: int,
    generator: torch.Generator,
    readout: Callable[[Tensor], Tensor],
) -> tuple[Tensor, Tensor]:
    """Mean and variance over ``n`` rollouts of ``readout(final_state)``.

    state: (B, C, H, W) seed; readout: (B, C, H, W) -> (B, K, H, W).
    Returns (mean, var), each (B, K, H, W). Deterministic for a seeded generator.
    """
    if n < 2:
        raise ValueError("stochastic_rollouts needs n >= 2 rollouts for a variance")
    moments = _Moments()
    for _ in range(n):
        moments.add(readout(model(state, steps, generator=generator)))
    return moments.mean_var()


@torch.no_grad()
def step_window(
    model: nn.Module,
    state: Tensor,
    steps: int,
    *,
    window: int,
    generator: torch.Generator,
    readout: Callable[[Tensor], Tensor],
) -> tuple[Tensor, Tensor]:
    """Mean and variance of ``readout(state_t)`` over the last ``window`` steps
    ``t = steps - window + 1 .. steps`` of ONE rollout: how much the prediction still moves
    at its end (a settled automaton gives 0), at the cost of one rollout instead of n.

    state: (B, C, H, W) seed; readout: (B, C, H, W) -> (B, K, H, W).
    Returns (mean, var), each (B, K, H, W), the variance unbiased (over ``window`` values).
    """
    if not 2 <= window <= steps:
        raise ValueError(f"step_window needs 2 <= window <= steps ({steps}), got {window}")
    first = steps - window + 1
    moments = _Moments()

    def collect(t: int, x: Tensor) -> None:
        if t >= first:
            moments.add(readout(x))

    model(state, steps, generator=generator, callback=collect)
    return moments.mean_var()


def error_auroc(prob: Tensor, truth: Tensor, uncertainty: Tensor) -> float:
    """AUROC of per-pixel uncertainty as a detector of wrong pixels (prob > 0.5 vs truth).

    0.5 is chance; NaN when every pixel is right (or every pixel is wrong).
    """
    from sklearn.metrics import roc_auc_score  # a 1 s import: only when evaluating

    wrong = ((prob > 0.5) != (truth > 0.5)).flatten().cpu().numpy()
    if wrong.all() or not wrong.any():
        return float("nan")
    return float(roc_auc_score(wrong, uncertainty.flatten().cpu().numpy().astype(np.float64)))
