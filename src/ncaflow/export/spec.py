"""What an exporter needs from a model: its config, task readout and weights as numpy arrays.

Built from ``state_dict()`` + :class:`~ncaflow.config.ModelConfig` only, so it
does not depend on how :class:`~ncaflow.model.nca.NCA` computes a step.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from ncaflow.config import ModelConfig
from ncaflow.export.errors import ExportError
from ncaflow.export.readouts import emitter
from ncaflow.model.perception import filter_bank
from ncaflow.tasks import TASKS, get_task

__all__ = ["ExportError", "ModelSpec", "Readout", "cascade_specs", "model_spec"]

Readout = Literal["rgba", "vote", "head", "mask"]  # a task's readout (Task.readout), or "head"


@dataclass(frozen=True, kw_only=True)
class ModelSpec:
    """A single-scale NCA reduced to arrays.

    kernels: (B, K, k, k) perception bank; B = 1 (shared by every channel) or C (learned)
    w1: (hidden_width, C*K), b1: (hidden_width,), w2: (C_upd, hidden_width)
    head_w: (n_classes, hidden_channels) and head_b: (n_classes,) for the "head" readout;
        with an MLP head (``model.head_hidden`` = N) its last layer, head_w (n_classes, N),
        after head_w1 (N, hidden_channels), head_b1 (N,) and a ReLU
    step_w: (hidden_width,) fc1's weight of the step entry t / T (``model.step_channel``)
    """

    config: ModelConfig
    task: str
    readout: Readout
    threshold: float | None  # selfclass: vote only over pixels with image > threshold
    kernels: np.ndarray
    w1: np.ndarray
    b1: np.ndarray
    w2: np.ndarray
    head_w: np.ndarray | None = None
    head_b: np.ndarray | None = None
    head_w1: np.ndarray | None = None
    head_b1: np.ndarray | None = None
    step_w: np.ndarray | None = None

    @property
    def n_filters(self) -> int:
        return int(self.kernels.shape[1])

    @property
    def kernel_size(self) -> int:
        return int(self.kernels.shape[-1])

    @property
    def updated(self) -> int:
        return self.config.output_channels + self.config.hidden_channels

    @property
    def n_classes(self) -> int:
        if self.head_w is not None:
            return int(self.head_w.shape[0])
        return self.config.output_channels


def _array(state: dict[str, torch.Tensor], key: str, shape: tuple[int, ...]) -> np.ndarray:
    if key not in state:
        raise ExportError(
            f"state_dict has no '{key}'; is this an ncaflow NCA? keys: {sorted(state)}"
        )
    arr = state[key].detach().cpu().float().numpy().reshape(shape).copy()
    if not np.isfinite(arr).all():
        raise ExportError(f"weight '{key}' holds NaN or inf; retrain or pick another checkpoint")
    return arr


def _shaped(state: dict[str, torch.Tensor], key: str, shape: tuple[int, ...]) -> np.ndarray:
    """A head weight that must have exactly ``shape`` (model.head, model.head_hidden)."""
    got = tuple(state[key].shape) if key in state else None
    if got is not None and got != shape:
        raise ExportError(
            f"{key} has shape {got}; the config (model.head, model.head_hidden, "
            f"model.hidden_channels) gives {shape}"
        )
    return _array(state, key, shape)


def _loaded(model_or_path: nn.Module | str | Path) -> nn.Module:
    if isinstance(model_or_path, str | Path):
        from ncaflow.guard.io import load

        return load(model_or_path)
    return model_or_path


def model_spec(
    model_or_path: nn.Module | str | Path,
    *,
    task: str | None = None,
    threshold: float | None = None,
) -> ModelSpec:
    """Read a saved model (path) or an in-memory NCA into a :class:`ModelSpec`.

    ``task`` defaults to ``model.run_config.task``; ``threshold`` (selfclass)
    to ``model.meta["threshold"]``, else 0.1. A cascade has one spec per level:
    :func:`cascade_specs`.
    """
    model = _loaded(model_or_path)
    if hasattr(model, "levels"):
        raise ExportError("a cascade has one spec per level: use cascade_specs(model)")
    meta: dict[str, Any] = getattr(model, "meta", None) or {}
    return _spec(model, model.state_dict(), _task_of(model, task), meta, threshold)


def cascade_specs(
    model_or_path: nn.Module | str | Path,
    *,
    task: str | None = None,
    threshold: float | None = None,
) -> list[ModelSpec]:
    """One :class:`ModelSpec` per level of a :class:`~ncaflow.model.cascade.Cascade` (one in all
    when its levels share weights); a linear head goes with the last level, which reads out."""
    model = _loaded(model_or_path)
    levels = list(getattr(model, "levels", ()))
    if not levels:
        raise ExportError("not a cascade (no .levels); use model_spec(model)")
    meta: dict[str, Any] = getattr(model, "meta", None) or {}
    task = _task_of(model, task)
    head_state = {k: v for k, v in model.state_dict().items() if k.startswith("head.")}
    specs = []
    for i, level in enumerate(levels):
        state = {**level.state_dict(), **(head_state if i == len(levels) - 1 else {})}
        last = i == len(levels) - 1
        specs.append(_spec(level, state, task, meta, threshold, head=last))
    return specs


def _task_of(model: nn.Module, task: str | None) -> str:
    run_config = getattr(model, "run_config", None)
    task = task or getattr(run_config, "task", None)
    if task not in TASKS:
        raise ExportError(
            f"unknown task {task!r}: pass task= one of {sorted(TASKS)} "
            "(a model loaded from disk knows its task)"
        )
    return task


def _spec(
    model: nn.Module,
    state: dict[str, torch.Tensor],
    task: str,
    meta: dict[str, Any],
    threshold: float | None,
    *,
    head: bool = True,
) -> ModelSpec:
    """The spec of one single-scale NCA from its (possibly extended) state_dict; ``head``:
    whether the config's linear head (``model.head > 0``) reads this NCA out."""
    config = getattr(model, "config", None)
    if not isinstance(config, ModelConfig):
        raise ExportError(
            "model has no ModelConfig in .config; pass an ncaflow NCA or a saved model"
        )
    kind = get_task(task)
    kind.export_check(config)
    c, hw = config.channels, config.hidden_width
    bank = filter_bank(config.perception)  # (K, 3, 3), or None: learned filters
    if bank is None:
        n, k = config.learned_filters, config.kernel_size
        learned = _array(state, "filters", (c, n, k, k))
        ident = np.zeros((c, 1, k, k), np.float32)
        ident[:, :, k // 2, k // 2] = 1.0
        kernels = np.concatenate([ident, learned], axis=1)  # (C, 1+n, k, k)
    else:
        kernels = bank.numpy()[None]
    n_filters = kernels.shape[1]
    upd = config.output_channels + config.hidden_channels
    readout: Readout = emitter(kind.readout).kind  # type: ignore[assignment]
    head_w = head_b = head_w1 = head_b1 = None
    mlp = config.head_hidden > 0
    last = "head.2" if mlp else "head"  # the layer that gives the logits
    if (head and config.head > 0) or f"{last}.weight" in state:
        readout = emitter(readout).with_head(task)  # type: ignore[assignment]
        if mlp:
            head_w1 = _shaped(state, "head.0.weight", (config.head_hidden, config.hidden_channels))
            head_b1 = _shaped(state, "head.0.bias", (config.head_hidden,))
        width = config.head_hidden if mlp else config.hidden_channels
        head_w = _shaped(state, f"{last}.weight", (config.head, width))
        head_b = _shaped(state, f"{last}.bias", (config.head,))
    default = kind.vote_threshold(meta)  # None: the task's vote counts every cell
    threshold = None if default is None else float(default if threshold is None else threshold)
    return ModelSpec(
        config=config,
        task=task,
        readout=readout,
        threshold=threshold,
        kernels=np.ascontiguousarray(kernels, np.float32),
        w1=_array(state, "fc1.weight", (hw, c * n_filters)),
        b1=_array(state, "fc1.bias", (hw,)),
        w2=_array(state, "fc2.weight", (upd, hw)),
        head_w=head_w,
        head_b=head_b,
        head_w1=head_w1,
        head_b1=head_b1,
        step_w=_array(state, "step_w", (hw,)) if config.step_channel else None,
    )
