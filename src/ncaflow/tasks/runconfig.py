"""A whole run config: read, overridden, derived by its task and checked against it.

:mod:`ncaflow.config` checks keys, types, ranges and relations between keys; what a task
derives from its data (a MedMNIST subset's channels and classes, own images' channels)
and whether the model fits the task are the task's (:class:`~ncaflow.tasks.base.Task`).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ncaflow.config import (
    ConfigError,
    RunConfig,
    check,
    check_ranges,
    from_dict,
    parse_override,
    read_yaml,
    set_key,
    short,
)
from ncaflow.model.perception import check_perception
from ncaflow.tasks import TASKS, get_task

__all__ = ["build_config", "load_config"]


def load_config(path: str | Path, overrides: Sequence[str] = ()) -> RunConfig:
    """Read a YAML/JSON run config, apply ``key.sub=value`` overrides and validate.

    Errors name the file, the dotted key and (when one set it) the override.
    """
    try:
        return build_config(read_yaml(path), overrides)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}", err.key) from None


def build_config(raw: Any, overrides: Sequence[str] = ()) -> RunConfig:
    """A parsed run config (not modified) plus overrides -> a validated RunConfig.

    What ``ncaflow train`` checks before it starts, and what the workflow checks for
    every grid cell before it schedules a job: keys, types, the range beside each field, the
    relations between keys, the task's data section, whether the model fits the task
    and what the task derives itself (a MedMNIST subset's channels and classes).
    """
    if not isinstance(raw, dict):
        raise ConfigError(
            f"expected a mapping (task:, model:, train:, data:), got {type(raw).__name__}"
        )
    raw = copy.deepcopy(raw)
    parsed = [(item, *parse_override(item)) for item in overrides]
    try:
        for item, key, value in parsed:
            set_key(raw, key, value, item)
        name = raw.get("task")
        if isinstance(name, str) and name in TASKS:
            get_task(name).derive_config(raw)  # fills in (and checks) what its data decides
        cfg = from_dict(RunConfig, raw)
        check(cfg.task in TASKS, "task", f"unknown task; choose one of {sorted(TASKS)}")
        cfg.validate()
        check_perception(cfg.model.perception, "model.perception")
        task = get_task(cfg.task)
        check_ranges(task.data_config(cfg.data), "data")
        task(config=cfg, device="cpu")  # checks that the model fits the task (reads no data)
    except ConfigError as err:
        origin = [item for item, key, _ in parsed if _related(key, err.key)]
        if origin and not str(err).startswith("--set"):
            raise ConfigError(f"--set {short(origin[-1])}: {err}", err.key) from None
        raise
    return cfg


def _related(key: str, other: str | None) -> bool:
    """Whether an override of ``key`` set (part of) config key ``other``."""
    if not other:
        return False
    other = re.sub(r"\[\d+\]$", "", other)  # train.steps[1] -> train.steps
    return key == other or other.startswith(key + ".") or key.startswith(other + ".")
