"""Tasks: how a batch becomes a seed state, the loss, the metrics and the prediction.

A new task is one new module with a :class:`~ncaflow.tasks.base.Task` subclass,
registered in ``TASKS`` below (module path, class name; imported lazily so
that ``import ncaflow`` stays cheap).
"""

from __future__ import annotations

import importlib

from ncaflow.tasks.base import Batch, Task

__all__ = ["TASKS", "Batch", "Task", "get_task"]

TASKS: dict[str, str] = {
    "growing": "ncaflow.tasks.growing:Growing",
    "selfclass": "ncaflow.tasks.selfclass:SelfClassification",
    "classification": "ncaflow.tasks.classification:Classification",
    "segmentation": "ncaflow.tasks.segmentation:Segmentation",
}


def get_task(name: str) -> type[Task]:
    """The Task class registered under ``name``."""
    from ncaflow.config import ConfigError

    if name not in TASKS:
        raise ConfigError(f"key 'task': unknown task {name!r}; choose one of {sorted(TASKS)}")
    module, cls = TASKS[name].split(":")
    task: type[Task] = getattr(importlib.import_module(module), cls)
    return task
