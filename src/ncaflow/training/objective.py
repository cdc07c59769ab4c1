"""What training minimises: the task's loss plus the optional hidden-state penalty.

``train.hidden_penalty`` (weight w) adds ``w * mean(hidden ** 2)`` per sample: the mean
square of the final state's hidden channels over channels, height and width. It keeps
the hidden state small, so it cannot drift into large values that the readout ignores
but later steps amplify. w = 0 adds nothing (not even a zero: the sum is not formed).
"""

from __future__ import annotations

from torch import Tensor, nn

from ncaflow.config import ModelConfig, RunConfig
from ncaflow.tasks.base import Batch, Task

__all__ = ["hidden_energy", "objective"]


def hidden_energy(final: Tensor, model: ModelConfig) -> Tensor:
    """(B, C, H, W) final states -> (B,) mean squared hidden channel value per sample."""
    start = model.input_channels + model.output_channels
    return final[:, start:].pow(2).flatten(1).mean(1)


def objective(
    task: Task, model: nn.Module, final: Tensor, batch: Batch, config: RunConfig
) -> Tensor:
    """(B,) per-sample training loss: the task's loss, plus the hidden penalty when set."""
    losses = task.loss(model, final, batch)
    weight = config.train.hidden_penalty
    if weight > 0.0:
        losses = losses + weight * hidden_energy(final, config.model)
    return losses
