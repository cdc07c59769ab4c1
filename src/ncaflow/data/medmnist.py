"""MedMNIST v2 (2D datasets only), read through the medmnist package's own classes."""

from __future__ import annotations

import zipfile
import zlib
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ncaflow.data.sources import (
    MEDMNIST_SIZES,
    DataError,
    _medmnist_info,
    fetch,
    medmnist_source,
    refetch_hint,
)

__all__ = ["load_medmnist", "medmnist_info"]

_SPLITS = ("train", "val", "test")


def _flags_2d(info: dict[str, Any]) -> list[str]:
    return sorted(f for f, v in info.items() if not v["python_class"].endswith("3D"))


def medmnist_info(flag: str) -> dict[str, Any]:
    """What ncaflow needs to know about a 2D MedMNIST dataset.

    Returns:
        dict with ``flag``, ``python_class``, ``task`` (e.g. ``"binary-class"``,
        ``"multi-class"``, ``"multi-label, binary-class"``, ``"ordinal-regression"``),
        ``multi_label`` (bool), ``n_classes``, ``n_channels``, ``label_names`` (list, by
        class index), ``label`` (medmnist's own ``{"0": name, ...}``), ``n_samples``
        ({split: N}) and ``sizes`` (available image sizes).
    """
    info = _medmnist_info()
    flags = _flags_2d(info)
    if flag not in flags:
        kind = "a 3D dataset, which ncaflow does not support" if flag in info else "unknown"
        raise DataError(f"MedMNIST flag {flag!r} is {kind}; valid flags: {', '.join(flags)}")
    entry = info[flag]
    labels = entry["label"]
    return {
        "flag": flag,
        "python_class": entry["python_class"],
        "task": entry["task"],
        "multi_label": entry["task"].startswith("multi-label"),
        "n_classes": len(labels),
        "n_channels": int(entry["n_channels"]),
        "label_names": [labels[str(i)] for i in range(len(labels))],
        "label": dict(labels),
        "n_samples": dict(entry["n_samples"]),
        "sizes": [s for s in MEDMNIST_SIZES if f"url{'' if s == 28 else f'_{s}'}" in entry],
    }


def load_medmnist(
    *,
    flag: str,
    split: Literal["train", "val", "test"],
    size: int = 28,
    cache_dir: str | Path,
    mirror: str | Path | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Load one split of a 2D MedMNIST dataset.

    The npz is placed in `cache_dir` by `fetch` (mirror, cache or download, with our own
    checksum handling); medmnist then reads it with ``download=False``.

    Returns:
        images: float32 ``(N, C, H, W)`` in [0, 1], C = 1 (grey) or 3 (RGB), H = W = size.
        labels: int64 ``(N,)`` for binary/multi-class/ordinal tasks, ``(N, L)`` for
        multi-label tasks (ChestMNIST, L = 14).
    """
    meta = medmnist_info(flag)
    if split not in _SPLITS:
        raise DataError(f"MedMNIST split must be one of {list(_SPLITS)}, not {split!r}")
    source = medmnist_source(flag, size)
    path = fetch(source, cache_dir=cache_dir, mirror=mirror)

    import medmnist

    dataset_cls = getattr(medmnist, meta["python_class"])
    try:
        ds = dataset_cls(split=split, root=str(path.parent), size=size, download=False)
        imgs, labels = np.asarray(ds.imgs), np.asarray(ds.labels)  # read (and check) here
    except (KeyError, ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        if path.stat().st_size == 0:
            why = "the file is empty"
        elif isinstance(exc, KeyError):
            why = f"an array is missing: {exc}"
        else:
            why = f"truncated or damaged: {exc}"
        raise DataError(
            f"{path} is not a readable MedMNIST npz with '{split}_images' and "
            f"'{split}_labels' ({why}); {refetch_hint(source, path, mirror)}"
        ) from exc

    if imgs.ndim == 3:  # (N, H, W) grey
        imgs = imgs[:, None]
    elif imgs.ndim == 4:  # (N, H, W, C)
        imgs = imgs.transpose(0, 3, 1, 2)
    if imgs.ndim != 4 or imgs.shape[1] != meta["n_channels"] or len(labels) != len(imgs):
        raise DataError(
            f"{path} [{split}] has images {np.asarray(ds.imgs).shape} and labels "
            f"{labels.shape}; expected (N, H, W[, 3]) with {meta['n_channels']} channel(s) "
            "and one label row per image"
        )
    fix = refetch_hint(source, path, mirror)
    images = _unit_range(imgs, f"{path} [{split}_images]", fix)  # (N, C, H, W) in [0, 1]
    if labels.dtype.kind == "f":  # a float label must still be a whole number
        whole = np.isfinite(labels) & (labels == np.round(labels))
        if not whole.all():
            rows = labels.reshape(len(labels), -1)
            first = int(np.flatnonzero(~whole.reshape(len(labels), -1).all(axis=1))[0])
            raise DataError(
                f"{path} [{split}_labels]: row {first} has label {rows[first].tolist()}, "
                f"not a whole number; labels are class indices 0, 1, ...; "
                f"{refetch_hint(source, path, mirror)}"
            )
    elif labels.dtype.kind not in "iub":
        raise DataError(
            f"{path} [{split}_labels]: labels of type {labels.dtype}; labels are integer class "
            f"indices; {refetch_hint(source, path, mirror)}"
        )

    if meta["multi_label"]:
        if labels.ndim != 2 or labels.shape[1] != meta["n_classes"]:
            raise DataError(
                f"{path} [{split}]: multi-label {flag} needs labels (N, {meta['n_classes']}), "
                f"found {labels.shape}"
            )
    elif labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]  # official files store (N, 1)
    elif labels.ndim != 1:
        raise DataError(f"{path} [{split}]: labels must be (N,) or (N, 1), found {labels.shape}")
    top = 2 if meta["multi_label"] else meta["n_classes"]  # multi-label: 0/1 per class
    bad = np.flatnonzero((labels < 0) | (labels >= top)) if labels.size else np.array([])
    if len(bad):
        row = int(bad[0]) // (labels.shape[1] if labels.ndim == 2 else 1)
        raise DataError(
            f"{path} [{split}_labels]: row {row} has label {labels.flat[bad[0]]}, outside "
            f"0..{top - 1} ({flag} has {meta['n_classes']} classes); "
            f"{refetch_hint(source, path, mirror)}"
        )
    return images, labels.astype(np.int64)


def _unit_range(imgs: np.ndarray, where: str, fix: str) -> np.ndarray:
    """Images scaled to [0, 1] by their dtype's range (uint8 by 255, uint16 by 65535);
    float images must be finite and in [0, 1] already."""
    if imgs.dtype.kind == "b":
        return np.ascontiguousarray(imgs, dtype=np.float32)
    if imgs.dtype.kind in "ui":
        if imgs.dtype.kind == "i" and imgs.size and int(imgs.min()) < 0:
            raise DataError(f"{where}: negative pixel values ({int(imgs.min())}); {fix}")
        top = float(np.iinfo(imgs.dtype).max)
        return np.ascontiguousarray(imgs, dtype=np.float32) / np.float32(top)
    if imgs.dtype.kind != "f":
        raise DataError(f"{where}: pixels of type {imgs.dtype}, not uint8/uint16; {fix}")
    out = np.ascontiguousarray(imgs, dtype=np.float32)
    if not np.isfinite(out).all():
        raise DataError(f"{where}: NaN or Inf pixel values; {fix}")
    if out.size and (float(out.min()) < 0 or float(out.max()) > 1):
        raise DataError(
            f"{where}: float pixels outside [0, 1] ({float(out.min()):g}..{float(out.max()):g}); "
            f"{fix}"
        )
    return out
