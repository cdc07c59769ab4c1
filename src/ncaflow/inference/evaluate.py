"""Evaluate a saved model on a split of its task's data."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ncaflow.config import ConfigError, RunConfig, from_dict, parse_override, set_key, to_dict
from ncaflow.data.stored import from_user, warn_dropped
from ncaflow.guard.io import atomic_write, config_of, load
from ncaflow.tasks import get_task

__all__ = ["evaluate", "with_overrides"]


def with_overrides(config: RunConfig, overrides: list[str]) -> RunConfig:
    """A saved model's ``config`` made ready to run here: overrides applied and validated.

    A model file chooses no path, URL or folder (:mod:`ncaflow.data.stored`): its
    ``data.root`` and ``data.mirror`` are dropped (one warning line says so), a stored
    path or URL of a file to read is refused; ``--set data.KEY=...`` chooses instead.
    """
    raw = to_dict(config)
    parsed = [(item, *parse_override(item)) for item in overrides]  # each read once
    raw["data"], dropped = from_user(raw["data"], [key for _, key, _ in parsed])
    warn_dropped(dropped)
    for item, key, value in parsed:
        set_key(raw, key, value, item)
    new = from_dict(RunConfig, raw)
    new.validate()
    get_task(new.task).data_config(new.data)
    return new


def evaluate(
    model_path: str | Path | Sequence[str | Path],
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

    Several paths evaluate an ensemble (classification only): the class scores averaged
    over every member's rollouts. The members must share task, dataset, image size and
    readout; the data is that of the first, with ``overrides``.
    """
    paths = [model_path] if isinstance(model_path, str | Path) else list(model_path)
    if not paths:
        raise ConfigError("evaluate needs at least one model")
    models = [load(path, device=device) for path in paths]
    if int8:
        from ncaflow.export.quant import dequantized_model

        models = [dequantized_model(m) for m in models]
    config = with_overrides(config_of(models[0]), overrides or [])
    model = models[0] if len(models) == 1 else _ensemble(models, paths, config)
    task = get_task(config.task)(config=config, device=device)
    task.setup()
    metrics: dict[str, Any] = {"parameters": sum(p.numel() for p in model.parameters())}
    if len(models) > 1:
        metrics["members"] = [str(path) for path in paths]
    taken: list[torch.Tensor] = []  # model.adaptive_steps: the steps each rollout ran
    hooks = [
        m.register_forward_hook(lambda m, args, out: _record(taken, m.steps_taken))
        for m in model.modules()
        if getattr(getattr(m, "config", None), "adaptive_steps", None) is not None
        and hasattr(m, "steps_taken")
    ]
    for split in splits:
        gen = torch.Generator(device=device).manual_seed(seed)
        taken.clear()
        try:
            metrics.update(task.evaluate(model, split, gen))
        except KeyError:
            raise ConfigError(f"task {config.task!r} has no split {split!r}") from None
        if taken:  # mean over every sample of every rollout
            metrics[f"{split}_mean_steps"] = torch.cat(taken).float().mean().item()
    for hook in hooks:
        hook.remove()
    if out is not None:
        atomic_write(out, lambda tmp: tmp.write_text(json.dumps(metrics, indent=2) + "\n"))
    return metrics


def _record(taken: list[torch.Tensor], steps: torch.Tensor | None) -> None:
    if steps is not None:  # None: a rollout with gradients, which runs every step
        taken.append(steps)


def _ensemble(models: list[nn.Module], paths: list[str | Path], config: RunConfig) -> nn.Module:
    """The members as one ``nn.ModuleList``, after checking that they share their data."""
    if not get_task(config.task).ensembles:
        raise ConfigError(
            f"{paths[0]}: task {config.task!r} has no ensembles (classification has); "
            "evaluate one model at a time"
        )

    def data_key(cfg: RunConfig) -> tuple[Any, ...]:
        d = to_dict(cfg)["data"]
        return cfg.task, d.get("flag"), d.get("size"), d.get("readout")

    first = data_key(config_of(models[0]))
    for path, member in zip(paths[1:], models[1:], strict=True):
        if data_key(config_of(member)) != first:
            raise ConfigError(
                f"{path}: an ensemble's members must share task, data.flag, data.size and "
                f"data.readout; it has {data_key(config_of(member))}, {paths[0]} has {first}"
            )
    return nn.ModuleList(models)
