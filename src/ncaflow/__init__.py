"""ncaflow: Neural Cellular Automata as a reproducible pipeline.

Import what you need from the submodules; the names below are the public API.
Heavy submodules (training, tasks, data) are imported on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "NCA": "ncaflow.model.nca",
    "Cascade": "ncaflow.model.cascade",
    "build_model": "ncaflow.model.cascade",
    "RunConfig": "ncaflow.config",
    "ModelConfig": "ncaflow.config",
    "TrainConfig": "ncaflow.config",
    "ConfigError": "ncaflow.config",
    "load_config": "ncaflow.tasks.runconfig",
    "load": "ncaflow.guard.io",
    "save": "ncaflow.guard.io",
    "train": "ncaflow.training.train",
    "evaluate": "ncaflow.inference.evaluate",
    "predict": "ncaflow.inference.predict",
    "get_task": "ncaflow.tasks",
}

__all__ = ["__version__", *sorted(_LAZY)]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'ncaflow' has no attribute {name!r}")
