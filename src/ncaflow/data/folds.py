"""Deterministic (stratified) k-fold splits, stored as JSON next to the prepared data.

A folds file records the checksum of the data it was made for, so a stale split is
caught (`read_folds`) instead of silently indexing different data.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from ncaflow.data.sources import DataError
from ncaflow.runtime.safe_io import atomic_write

__all__ = ["array_checksum", "fold_indices", "make_folds", "read_folds", "write_folds"]

FOLDS_VERSION = 1


def array_checksum(*arrays: np.ndarray) -> str:
    """Short sha256 hex (16 chars) over each array's dtype, shape and bytes, in order."""
    digest = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        digest.update(f"{a.dtype.str}{a.shape};".encode())
        digest.update(a.tobytes())
    return digest.hexdigest()[:16]


def _strat_key(labels: np.ndarray, *, min_count: int) -> np.ndarray:
    """One class per sample: the label, or for multi-label ``(N, L)`` the first positive
    label (L for none). Classes with fewer than `min_count` members are pooled so that
    every stratum can be split."""
    if labels.ndim == 2 and labels.shape[1] > 1:
        positive = labels > 0
        key = np.where(positive.any(axis=1), positive.argmax(axis=1), labels.shape[1])
    else:
        key = labels.reshape(len(labels))
    _, key = np.unique(key, return_inverse=True)
    counts = np.bincount(key)
    rare = counts[key] < min_count
    if rare.any():
        key = np.where(rare, -1, key)
        if rare.sum() < min_count:  # the pooled stratum is itself too small: join the largest
            key = np.where(rare, int(np.argmax(counts)), key)
    return key


def make_folds(
    labels: np.ndarray | None,
    *,
    k: int,
    seed: int,
    checksum: str,
    val_fraction: float | None = None,
    n: int | None = None,
) -> dict[str, Any]:
    """Split N samples into `k` train/val folds, deterministically for a given `seed`.

    Args:
        labels: ``(N,)`` or ``(N, 1)`` class labels (stratified), ``(N, L)`` multi-label
            (stratified on the first positive label), or None for plain KFold (then `n`).
        k: number of folds; ``k == 1`` is one train/val split of `val_fraction`
            (default 0.2). For k > 1 every val fold is ~1/k and `val_fraction` is unused.
        checksum: `array_checksum` of the data, stored so stale folds are caught.

    Returns:
        ``{"version": 1, "k", "seed", "checksum", "n", "folds": [{"train": [...],
        "val": [...]}, ...]}`` with sorted int indices; JSON-able.
    """
    if labels is None:
        if n is None:
            raise DataError("make_folds needs labels or n (the number of samples)")
        n_samples = int(n)
    else:
        labels = np.asarray(labels)
        n_samples = len(labels)
        if n is not None and n != n_samples:
            raise DataError(f"make_folds: n={n} but labels has {n_samples} rows")
    if k < 1 or (k > 1 and n_samples < k) or n_samples < 2:
        raise DataError(f"cannot make k={k} folds from {n_samples} samples; need 2 <= k <= N")
    frac = 0.2 if val_fraction is None else float(val_fraction)
    if not 0.0 < frac < 1.0:
        raise DataError(f"val_fraction must be in (0, 1), got {val_fraction}")

    from sklearn.model_selection import KFold, StratifiedKFold, train_test_split  # 1 s import

    index = np.arange(n_samples)
    key = None if labels is None else _strat_key(labels, min_count=max(k, 2))
    splits: list[tuple[np.ndarray, np.ndarray]]
    try:
        if k == 1:
            train, val = train_test_split(index, test_size=frac, random_state=seed, stratify=key)
            splits = [(train, val)]
        elif key is None:
            splits = list(KFold(n_splits=k, shuffle=True, random_state=seed).split(index))
        else:
            skf = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
            splits = list(skf.split(index, key))
    except ValueError as exc:
        raise DataError(f"cannot split {n_samples} samples into k={k} folds: {exc}") from exc
    return {
        "version": FOLDS_VERSION,
        "k": k,
        "seed": seed,
        "checksum": checksum,
        "n": n_samples,
        "folds": [{"train": sorted(map(int, t)), "val": sorted(map(int, v))} for t, v in splits],
    }


def write_folds(path: str | Path, folds: dict[str, Any]) -> None:
    """Write `folds` as JSON to `path` atomically (temp file + rename)."""
    text = json.dumps(folds, separators=(",", ":")) + "\n"
    atomic_write(path, lambda tmp: tmp.write_text(text))


def read_folds(path: str | Path, *, checksum: str | None = None) -> dict[str, Any]:
    """Read a folds file; if `checksum` is given it must match the one stored there."""
    path = Path(path)
    try:
        folds = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise DataError(f"no folds file at {path}; run the prepare step first") from exc
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(f"cannot read folds file {path} ({exc}); re-run prepare") from exc
    if not isinstance(folds, dict) or folds.get("version") != FOLDS_VERSION:
        raise DataError(f"{path} is not a version-{FOLDS_VERSION} folds file; re-run prepare")
    if checksum is not None and folds.get("checksum") != checksum:
        raise DataError(
            f"folds in {path} were made for data with checksum {folds.get('checksum')}, "
            f"data now has {checksum}; re-run prepare"
        )
    return folds


def fold_indices(folds: dict[str, Any], fold: int) -> tuple[np.ndarray, np.ndarray]:
    """The (train, val) index arrays (int64) of fold number `fold` (0-based)."""
    n_folds = len(folds["folds"])
    if not 0 <= fold < n_folds:
        raise DataError(f"fold {fold} does not exist; valid folds are 0..{n_folds - 1}")
    entry = folds["folds"][fold]
    return np.asarray(entry["train"], dtype=np.int64), np.asarray(entry["val"], dtype=np.int64)
