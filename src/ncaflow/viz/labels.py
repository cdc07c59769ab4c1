"""Human labels for the workflow's column names, grid cells and metric ranges.

``val_loss`` reads "validation loss", ``hidden~12_fire~0.5`` reads "hidden
channels = 12, fire rate = 0.5"; names without an entry fall back to their own
words (underscores as spaces), so a new metric or alias still gets a label.
"""

from __future__ import annotations

import re

__all__ = ["BOUNDED", "alias_label", "bounds", "cell_label", "metric_label"]

# Grid aliases used by the shipped configs; any other alias is shown as written.
ALIASES = {
    "hidden": "hidden channels",
    "width": "MLP width",
    "fire": "fire rate",
    "lr": "learning rate",
    "percept": "perception",
    "steps": "steps",
    "batch": "batch size",
    "scales": "scales",
}

SPLITS = {"val": "validation", "test": "test"}

# Metric names without their split prefix.
METRICS = {
    "loss": "loss",
    "acc": "accuracy",
    "auc": "AUC",
    "f1": "F1",
    "dice": "Dice",
    "iou": "IoU",
    "pixel_acc": "pixel accuracy",
    "mse": "MSE",
    "persistence_mse": "MSE after a long rollout",
    "damaged_mse": "MSE after damage",
    "regrowth_mse": "MSE after regrowth",
    "uncertainty_auroc": "uncertainty AUROC",
    "mean_variance": "mean variance",
}

# Metrics that live in [0, 1]: their error bars are clipped there.
BOUNDED = frozenset({"acc", "auc", "f1", "dice", "iou", "pixel_acc", "uncertainty_auroc"})

_CELL_PART = re.compile(r"([a-z][a-z0-9]*)~(.*?)(?=_[a-z][a-z0-9]*~|$)")


def _split(name: str) -> tuple[str, str]:
    """``"val_pixel_acc"`` -> ``("val", "pixel_acc")``; no known prefix -> ``("", name)``."""
    prefix, _, rest = name.partition("_")
    return (prefix, rest) if prefix in SPLITS and rest else ("", name)


def metric_label(name: str) -> str:
    """``"val_loss"`` -> ``"validation loss"``, ``"test_dice"`` -> ``"test Dice"``."""
    split, metric = _split(name)
    words = METRICS.get(metric, metric.replace("_", " "))
    return f"{SPLITS[split]} {words}" if split else words


def alias_label(alias: str) -> str:
    """A grid alias as words: ``"hidden"`` -> ``"hidden channels"``."""
    return ALIASES.get(alias, alias.replace("_", " "))


def cell_label(cell: str) -> str:
    """A grid cell's folder name as words: ``"hidden~12_fire~0.5"`` ->
    ``"hidden channels = 12, fire rate = 0.5"``; other names unchanged."""
    parts = _CELL_PART.findall(cell)
    if not parts:
        return cell
    return ", ".join(f"{alias_label(alias)} = {value}" for alias, value in parts)


def bounds(name: str) -> tuple[float, float] | None:
    """``(0, 1)`` for a metric bounded there (accuracy, AUC, F1, Dice, IoU), else None."""
    return (0.0, 1.0) if _split(name)[1] in BOUNDED else None
