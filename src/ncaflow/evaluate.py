"""Evaluate a saved model on a split of its task's data."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from ncaflow.config import ConfigError, RunConfig, apply_override, from_dict, to_dict
from ncaflow.io import atomic_write, config_of, load
from ncaflow.tasks import get_task

__all__ = ["evaluate", "with_overrides"]


def with_overrides(config: RunConfig, overrides: list[str]) -> RunConfig:
    """A copy of ``config`` with ``key.sub=value`` overrides applied and validated."""
    raw = to_dict(config)
    for item in overrides:
        apply_override(raw, item)
    new = from_dict(RunConfig, raw)
    new.validate()
    return new


def evaluate(
    model_path: str | Path,
    *,
    splits: tuple[str, ...] = ("val", "test"),
    overrides: list[str] | None = None,
    out: str | Path | None = None,
    device: str = "cpu",
    seed: int = 0,
    int8: bool = False,
) -> dict[str, Any]:
    """Metrics of a saved model; ``overrides`` may point data at another root or mirror.

    The fire-mask generator is seeded, so the numbers are reproducible. ``int8``
    evaluates the weights the int8 C export carries (quantised and restored).
    """
    model = load(model_path, device=device)
    config = with_overrides(config_of(model), overrides or [])
    if int8:
        from ncaflow.export.quant import dequantized_model

        model = dequantized_model(model)
    task = get_task(config.task)(config=config, device=device)
    task.setup()
    metrics: dict[str, Any] = {"parameters": sum(p.numel() for p in model.parameters())}
    for split in splits:
        gen = torch.Generator(device=device).manual_seed(seed)
        try:
            metrics.update(task.evaluate(model, split, gen))
        except KeyError:
            raise ConfigError(f"task {config.task!r} has no split {split!r}") from None
    if out is not None:
        atomic_write(out, lambda tmp: tmp.write_text(json.dumps(metrics, indent=2) + "\n"))
    return metrics
