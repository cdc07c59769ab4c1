"""MNIST (IDX files, fetched through `sources`) and scikit-learn's offline 8x8 digits."""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path
from typing import Literal

import numpy as np

from ncaflow.data.sources import SOURCES, DataError, fetch, refetch_hint

__all__ = ["load_digits", "load_mnist", "read_idx"]

# IDX type codes -> big-endian numpy dtypes.
_IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def read_idx(path: str | Path, *, hint: str | None = None) -> np.ndarray:
    """Read an IDX file (gzip-compressed or raw) into a native-endian array of its shape.

    Raises:
        DataError: the file is not IDX (bad magic), is truncated, or is a broken gzip;
        the message ends with `hint` (default: delete the file and fetch it again).
    """
    path = Path(path)
    hint = hint or f"delete {path} and fetch it again"
    try:
        with open(path, "rb") as f:
            raw = f.read()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise DataError(f"{path} is a broken or truncated gzip file ({exc}); {hint}") from exc
    if len(raw) < 4 or raw[:2] != b"\x00\x00" or raw[2] not in _IDX_DTYPES:
        raise DataError(f"{path} is not an IDX file (bad magic number {raw[:4]!r}); {hint}")
    dtype, ndim = _IDX_DTYPES[raw[2]], raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path} is truncated inside its IDX header; {hint}")
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) - header != expected:
        raise DataError(
            f"{path} holds {len(raw) - header} data bytes but its IDX header {shape} "
            f"needs {expected} (truncated or corrupt); {hint}"
        )
    data = np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)
    return data.astype(dtype.newbyteorder("="))


def load_mnist(
    *,
    split: Literal["train", "test"] = "test",
    root: str | Path,
    mirror: str | Path | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Load one MNIST split.

    Returns:
        images: uint8 ``(N, 28, 28)``; labels: int64 ``(N,)`` in 0..9.
    """
    if split not in ("train", "test"):
        raise DataError(f"MNIST split must be 'train' or 'test', not {split!r}")
    found = {}
    for kind in ("images", "labels"):
        source = SOURCES[f"mnist-{split}-{kind}"]
        path = fetch(source, root=root, mirror=mirror)
        found[kind] = (path, read_idx(path, hint=refetch_hint(source, path, mirror)))
    (images_path, raw_images), (labels_path, raw_labels) = found["images"], found["labels"]
    images, labels = raw_images.astype(np.uint8), raw_labels.astype(np.int64)
    if images.ndim != 3 or images.shape[1:] != (28, 28) or labels.shape != images.shape[:1]:
        raise DataError(
            f"MNIST {split}: {images_path} has shape {images.shape} and {labels_path} "
            f"has shape {labels.shape}; expected (N, 28, 28) and (N,)"
        )
    bad = np.flatnonzero((labels < 0) | (labels > 9))
    if len(bad):
        raise DataError(
            f"{labels_path}: label {labels[bad[0]]} at row {bad[0]} is not a digit 0..9; "
            f"{refetch_hint(SOURCES[f'mnist-{split}-labels'], labels_path, mirror)}"
        )
    return images, labels  # (N, 28, 28) uint8, (N,) int64


def load_digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's bundled 8x8 digits (1797 images; no network).

    Returns:
        images: uint8 ``(N, 8, 8)`` scaled from 0..16 to 0..255; labels: int64 ``(N,)``.
    """
    from sklearn.datasets import load_digits as sk_load_digits

    bunch = sk_load_digits()
    images = np.rint(np.asarray(bunch.images) * (255.0 / 16.0)).astype(np.uint8)
    return images, np.asarray(bunch.target, dtype=np.int64)
