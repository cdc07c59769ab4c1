"""Every number of a run config has its allowed range beside its field."""

from __future__ import annotations

import dataclasses
import typing
from typing import Any

from ncaflow.config import (
    Range,
    RunConfig,
    TrainConfig,
    range_of,
)
from ncaflow.tasks import TASKS, get_task


def _unranged_keys(cls: Any, where: str) -> list[str]:
    """Dotted keys of every int/float (or list or optional of them) field of a dataclass
    that has no range beside it."""
    keys = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        key = f"{where}.{f.name}" if where else f.name
        tp = hints[f.name]
        inner = [a for a in typing.get_args(tp) if a is not type(None)] or [tp]
        for t in inner:
            if dataclasses.is_dataclass(t):
                keys += _unranged_keys(t, key)
            elif t in (int, float) or typing.get_args(t) in ((int,), (float,)):
                keys += [] if "range" in f.metadata else [key]
    return keys


def test_every_numeric_key_has_a_range_beside_it() -> None:
    keys = _unranged_keys(RunConfig, "")
    for name in TASKS:
        keys += _unranged_keys(get_task(name).Data, "data")
    assert not keys, f"give these fields a range (ncaflow.config.ranged): {sorted(set(keys))}"
    assert range_of(dataclasses.fields(TrainConfig)[4]) == Range(0, 10, lo_open=True)  # train.lr
