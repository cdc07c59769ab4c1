"""The run config's dataclasses: every hyperparameter in exactly one field, with the
range of every number beside it (:func:`~ncaflow.config.checks.ranged`).

A task's ``data:`` section is its own dataclass (``Task.Data``, in the task's module).
YAML files, the CLI and the workflow all flow through
:func:`~ncaflow.config.parse.from_dict`, which rejects unknown keys and wrong types
with a message naming the file and the dotted key.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from ncaflow.config.checks import (
    FRACTION,
    MAX_STEPS,
    POSITIVE,
    Range,
    check,
    check_ranges,
    ranged,
)

__all__ = [
    "CONFIG_VERSION",
    "AdaptiveStepsConfig",
    "CascadeConfig",
    "EarlyStoppingConfig",
    "ModelConfig",
    "RunConfig",
    "SchedulerConfig",
    "TrainConfig",
]

CONFIG_VERSION = 1

Padding = Literal["zeros", "reflect", "replicate", "circular"]


@dataclass(frozen=True, kw_only=True)
class AdaptiveStepsConfig:
    """Stop an inference rollout early, per sample (:mod:`ncaflow.model.adaptive`): after
    ``patience`` steps in a row whose largest change of any updatable channel of any cell
    is below ``tol``, once ``min_steps`` steps ran; at most the rollout's own length."""

    tol: float = ranged(1e-3, POSITIVE)
    patience: int = ranged(3, Range(1, MAX_STEPS))
    min_steps: int = ranged(1, Range(1, MAX_STEPS))


@dataclass(frozen=True, kw_only=True)
class ModelConfig:
    """Shape and dynamics of one NCA.

    The state has ``input + output + hidden`` channels in that order. Input
    channels (e.g. the image to classify) are frozen: updates never touch them.
    """

    input_channels: int = ranged(0, Range(0, 64))
    output_channels: int = ranged(4, Range(0, 1024))
    hidden_channels: int = ranged(12, Range(0, 1024))
    hidden_width: int = ranged(128, Range(1, 8192))
    perception: str = "sobel"  # a fixed bank of ncaflow.model.perception.BANKS, or "learned"
    learned_filters: int = ranged(2, Range(1, 64))
    kernel_size: int = ranged(3, Range(1, 31))
    padding: Padding = "zeros"
    fire_rate: float = ranged(0.5, Range(0, 1, lo_open=True))  # (0, 1]
    alive_channel: int | None = ranged(None, Range(0, 2048))
    alive_threshold: float = ranged(0.1, Range(0, 1))  # an alpha value; the C export prints it
    # > 0: a linear head from the mean hidden state to this many logits
    head: int = ranged(0, Range(0, 100_000))
    # > 0: that head gets a hidden layer of this many units with ReLU before the logits
    head_hidden: int = ranged(0, Range(0, 100_000))
    # T > 0: the update MLP also sees t / T at step t (t = 0 first), NCALab's temporal
    # encoding; T is usually train.steps[-1]. 0: off
    step_channel: int = ranged(0, Range(0, MAX_STEPS))
    # inference (no gradients) stops each sample's rollout once its state settles; null: off
    adaptive_steps: AdaptiveStepsConfig | None = None

    @property
    def channels(self) -> int:
        return self.input_channels + self.output_channels + self.hidden_channels

    def validate(self, where: str = "model") -> None:
        """Relations between keys (the range of each number is beside its field; the
        perception's name is checked by the filter banks, :mod:`ncaflow.model.perception`)."""
        check(self.output_channels + self.hidden_channels > 0, where, "no updatable channels")
        check(self.kernel_size % 2 == 1, f"{where}.kernel_size", "must be odd")
        check(
            self.head_hidden == 0 or self.head > 0,
            f"{where}.head_hidden",
            "is the hidden layer of the head; set model.head (and data.readout: head) or 0",
        )
        if self.alive_channel is not None:
            check(
                0 <= self.alive_channel < self.channels,
                f"{where}.alive_channel",
                f"must index a state channel (0..{self.channels - 1}) or be null",
            )


@dataclass(frozen=True, kw_only=True)
class CascadeConfig:
    """Coarse-to-fine schedule: run ``steps[i]`` steps at ``1/scales[i]`` resolution."""

    scales: list[int] = ranged([4, 2, 1], Range(1, 64))
    steps: list[int] = ranged([16, 16, 16], Range(1, MAX_STEPS))
    shared: bool = False

    def validate(self, where: str = "cascade") -> None:
        check(len(self.scales) == len(self.steps), where, "scales and steps differ in length")
        check(
            self.scales == sorted(self.scales, reverse=True),
            f"{where}.scales",
            "must be coarse to fine",
        )


@dataclass(frozen=True, kw_only=True)
class SchedulerConfig:
    name: Literal["constant", "multistep", "cosine", "exponential"] = "constant"
    milestones: list[int] = ranged([], Range(1, 1e9))
    gamma: float = ranged(0.1, Range(0, 100, lo_open=True))
    warmup: int = ranged(0, Range(0, 1e9))


@dataclass(frozen=True, kw_only=True)
class EarlyStoppingConfig:
    metric: str = "val_loss"
    mode: Literal["min", "max"] = "min"
    # evaluations without improvement; 0 disables early stopping
    patience: int = ranged(0, Range(0, 1e9))
    min_delta: float = ranged(0.0, Range(0, 1e9))


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    iterations: int = ranged(2000, Range(1, 1e9))
    batch_size: int = ranged(8, Range(1, 65536))
    steps: list[int] = ranged([64, 96], Range(1, MAX_STEPS))  # [n] fixed, [lo, hi] sampled
    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    lr: float = ranged(2e-3, Range(0, 10, lo_open=True))
    weight_decay: float = ranged(0.0, Range(0, 100))
    betas: list[float] = ranged([0.9, 0.999], FRACTION)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    grad_clip: float | None = ranged(None, Range(0, 1e9, lo_open=True))
    grad_norm: bool = False  # Distill: normalise each parameter's gradient to unit L2
    # classification: focal loss (1 - p_true)^gamma * CE in training; 0 = cross-entropy
    focal_gamma: float = ranged(0.0, Range(0, 10))
    # weight of the mean squared hidden channels of the final state, added to the loss
    hidden_penalty: float = ranged(0.0, Range(0, 1e6))
    gradient_checkpointing: bool = False
    cuda_graphs: bool = (
        True  # CUDA + Adam/AdamW: replay iterations as graphs (ncaflow.backends.graphs)
    )
    eval_every: int = ranged(100, Range(1, 1e9))
    checkpoint_every: int = ranged(100, Range(1, 1e9))
    log_images_every: int = ranged(500, Range(1, 1e9))
    early_stopping: EarlyStoppingConfig = field(default_factory=EarlyStoppingConfig)
    finetune_from: str | None = None  # a saved model to start from
    trainable: Literal["all", "last"] = "all"  # "last": only the last update layer (and head)
    seed: int = ranged(0, Range(0, 2**32 - 3))  # numpy seeds are < 2**32; the trainer adds 2
    device: str = "auto"
    threads: int | None = ranged(None, Range(1, 4096))
    progress: bool = True
    # CPU kernels that give the same bytes on any x86-64 CPU (ncaflow.runtime.reproducible);
    # the perception never compiles there: +31-51 % CPU time over eager (benchmarks/README.md)
    reproducible: bool = False

    def validate(self, where: str = "train") -> None:
        """Relations between keys; the range of each number is beside its field."""
        check(len(self.steps) in (1, 2), f"{where}.steps", "give [n] or [min, max]")
        check(self.steps[0] <= self.steps[-1], f"{where}.steps", "min must be <= max")
        check(len(self.betas) == 2, f"{where}.betas", "give two numbers")
        milestones = self.scheduler.milestones
        check(
            milestones == sorted(milestones),
            f"{where}.scheduler.milestones",
            f"{milestones} must be in increasing order",
        )


@dataclass(frozen=True, kw_only=True)
class RunConfig:
    """Everything needed to train (and later rebuild) one model."""

    task: str
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    data: dict[str, Any] = field(default_factory=dict)  # task-specific: Task.Data
    cascade: CascadeConfig | None = None
    name: str = ""
    version: int = ranged(CONFIG_VERSION, Range(1, 1000))

    def validate(self) -> None:
        """Ranges and relations between keys; the task's name and ``data:`` section are
        checked by the task registry (:mod:`ncaflow.tasks`)."""
        check(self.version == CONFIG_VERSION, "version", f"this ncaflow reads {CONFIG_VERSION}")
        check_ranges(self)
        self.model.validate()
        self.train.validate()
        check(
            self.train.hidden_penalty == 0.0 or self.model.hidden_channels > 0,
            "train.hidden_penalty",
            "the model has no hidden channels to penalise; set it to 0",
        )
        check(
            not (self.train.gradient_checkpointing and self.model.step_channel),
            "train.gradient_checkpointing",
            "does not apply to a model with model.step_channel (it steps one at a time); "
            "set it to false",
        )
        if self.cascade is not None:
            self.cascade.validate()
