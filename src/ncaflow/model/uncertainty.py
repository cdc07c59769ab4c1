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
    total: Tensor | None = None
    total_sq: Tensor | None = None
    for _ in range(n):
        p = readout(model(state, steps, generator=generator)).double()
        total = p if total is None else total + p
        total_sq = p * p if total_sq is None else total_sq + p * p
    assert total is not None and total_sq is not None
    mean = total / n
    var = (total_sq / n - mean * mean).clamp(min=0.0) * n / (n - 1)  # unbiased
    return mean.float(), var.float()


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
    total: list[Tensor] = []  # [sum, sum of squares]

    def collect(t: int, x: Tensor) -> None:
        if t < first:
            return
        p = readout(x).double()
        if total:
            total[0] += p
            total[1] += p * p
        else:
            total.extend([p.clone(), p * p])

    model(state, steps, generator=generator, callback=collect)
    mean = total[0] / window
    var = (total[1] / window - mean * mean).clamp(min=0.0) * window / (window - 1)
    return mean.float(), var.float()


def error_auroc(prob: Tensor, truth: Tensor, uncertainty: Tensor) -> float:
    """AUROC of per-pixel uncertainty as a detector of wrong pixels (prob > 0.5 vs truth).

    0.5 is chance; NaN when every pixel is right (or every pixel is wrong).
    """
    from sklearn.metrics import roc_auc_score  # a 1 s import: only when evaluating

    wrong = ((prob > 0.5) != (truth > 0.5)).flatten().cpu().numpy()
    if wrong.all() or not wrong.any():
        return float("nan")
    return float(roc_auc_score(wrong, uncertainty.flatten().cpu().numpy().astype(np.float64)))
