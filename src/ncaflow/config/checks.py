"""Config errors and checks: the error every bad value ends in, and the allowed range of
a number, given beside its field (:func:`ranged`) and checked by :func:`check_ranges`."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "AT_LEAST_0",
    "AT_LEAST_1",
    "FRACTION",
    "MAX_SIDE",
    "MAX_STEPS",
    "POSITIVE",
    "ConfigError",
    "Range",
    "check",
    "check_ranges",
    "range_of",
    "ranged",
    "short",
]


class ConfigError(ValueError):
    """A configuration value is missing, unknown or invalid; ``key`` is the dotted key."""

    def __init__(self, message: str, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key


def short(value: Any, limit: int = 60) -> str:
    """``repr(value)`` for a message, cut to ``limit`` characters: a value is never shown
    whole (a YAML file can hold megabytes in one value)."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 25]}... ({len(text)} characters)"


def check(ok: bool, key: str, message: str) -> None:
    """Raise ConfigError ``key '<key>': <message>`` unless ``ok``."""
    if not ok:
        raise ConfigError(f"key '{key}': {message}", key)


@dataclass(frozen=True)
class Range:
    """Allowed values of one numeric key: ``lo``..``hi``, each end open or closed."""

    lo: float = -math.inf
    hi: float = math.inf
    lo_open: bool = False
    hi_open: bool = False

    def __contains__(self, value: float) -> bool:
        above = value > self.lo if self.lo_open else value >= self.lo
        below = value < self.hi if self.hi_open else value <= self.hi
        return math.isfinite(value) and above and below

    def __str__(self) -> str:
        def text(x: float) -> str:
            return str(int(x)) if math.isfinite(x) and x == int(x) else f"{x:g}"

        if self.hi == math.inf:
            return f"{'>' if self.lo_open else '>='} {text(self.lo)}"
        left, right = "(" if self.lo_open else "[", ")" if self.hi_open else "]"
        return f"in {left}{text(self.lo)}, {text(self.hi)}{right}"


AT_LEAST_0 = Range(0)
AT_LEAST_1 = Range(1)
POSITIVE = Range(0, lo_open=True)
FRACTION = Range(0, 1, hi_open=True)  # [0, 1)

MAX_SIDE = 4096  # the largest grid side (data.size, a model file's sizes, export --size)
MAX_STEPS = 100_000  # the longest rollout (train.steps, --steps of animate and export)

ANY = Range()  # a number without a range must still be finite


def ranged(default: Any, allowed: Range) -> Any:
    """A dataclass field with its allowed range beside it: ``lr: float = ranged(2e-3,
    POSITIVE)``. A list's range applies to each element (its default is copied per
    instance); None (where the type allows it) is always allowed."""
    meta = {"range": allowed}
    if isinstance(default, list):
        items = list(default)
        return field(default_factory=lambda: list(items), metadata=meta)
    return field(default=default, metadata=meta)


def range_of(f: dataclasses.Field[Any]) -> Range:
    """The range given beside a field (:func:`ranged`), else any finite number."""
    allowed: Range = f.metadata.get("range", ANY)
    return allowed


def check_ranges(obj: Any, where: str = "") -> None:
    """Check every number of config dataclass ``obj`` (recursively) against the range
    beside its field (:func:`ranged`).

    Raises ConfigError ``key 'train.lr': nan is not allowed; give a number > 0``.  A
    float without a range must still be finite.
    """
    for f in dataclasses.fields(obj):
        key = f"{where}.{f.name}" if where else f.name
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            check_ranges(value, key)
            continue
        items = value if isinstance(value, list) else [value]
        for item in items:
            if isinstance(item, bool) or not isinstance(item, int | float):
                continue
            allowed = range_of(f)
            if item not in allowed:
                what = "a finite number" if allowed == ANY else f"a number {allowed}"
                raise ConfigError(f"key '{key}': {short(item)} is not allowed; give {what}", key)
