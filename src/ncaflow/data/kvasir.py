"""Kvasir-SEG polyp segmentation: RGB images and binary masks at a fixed square size."""

from __future__ import annotations

import os
import shutil
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ncaflow.data.sources import SOURCES, DataError, fetch, mirror_dir

__all__ = ["load_kvasir"]

_FOLDER = "kvasir-seg"  # mirror and cache layout: kvasir-seg/images/*.jpg, kvasir-seg/masks/*.jpg
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def _has_layout(folder: Path) -> bool:
    return (folder / "images").is_dir() and (folder / "masks").is_dir()


def _extract(zip_path: Path, dest: Path) -> None:
    """Extract the Kvasir-SEG zip into `dest` atomically (temp folder, then rename)."""
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}."))
    try:
        try:
            with zipfile.ZipFile(zip_path) as zf:
                zf.extractall(tmp)  # zipfile drops absolute paths and '..' parts
        except (zipfile.BadZipFile, OSError) as exc:
            raise DataError(
                f"cannot extract {zip_path} ({exc}); delete it and fetch again"
            ) from exc
        roots = sorted({p.parent for p in tmp.rglob("images") if _has_layout(p.parent)})
        if not roots:
            raise DataError(f"{zip_path} has no folder with images/ and masks/ inside")
        try:
            os.rename(roots[0], dest)
        except OSError:
            if not _has_layout(dest):  # another process may have won the race
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _kvasir_folder(cache_dir: str | Path, mirror: str | Path | None) -> Path:
    mdir = mirror_dir(mirror)
    if mdir is not None and _has_layout(mdir / _FOLDER):
        return mdir / _FOLDER
    cached = Path(cache_dir) / _FOLDER
    if not _has_layout(cached):
        zip_path = fetch(SOURCES["kvasir-seg"], cache_dir=cache_dir, mirror=mirror)
        _extract(zip_path, cached)
    return cached


def load_kvasir(
    *, size: int = 64, cache_dir: str | Path, mirror: str | Path | None = None
) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Load every Kvasir-SEG image/mask pair, resized to `size` x `size`.

    Sources: the mirror folder ``kvasir-seg/{images,masks}`` if present, else the
    official zip (fetched, then extracted once into ``cache_dir/kvasir-seg``).
    Images are resized with bilinear filtering (aspect ratio not kept). Masks are read
    as grey, resized with bilinear filtering, then thresholded at 127 (value > 127 is
    foreground), which also removes JPEG ringing.

    Returns:
        images: float32 ``(N, 3, size, size)`` in [0, 1]; masks: float32
        ``(N, 1, size, size)`` in {0, 1}; ids: sorted file stems, one per image.
    """
    if size < 1:
        raise DataError(f"Kvasir-SEG size must be >= 1, got {size}")
    folder = _kvasir_folder(cache_dir, mirror)
    image_files = sorted(
        p for p in (folder / "images").iterdir() if p.suffix.lower() in _IMAGE_SUFFIXES
    )
    if not image_files:
        raise DataError(f"no images (*.jpg, *.png) in {folder / 'images'}")
    masks = {p.stem: p for p in (folder / "masks").iterdir() if p.suffix.lower() in _IMAGE_SUFFIXES}

    ids, images, targets = [], [], []
    for image_file in image_files:
        mask_file = masks.get(image_file.stem)
        if mask_file is None:
            raise DataError(
                f"Kvasir-SEG image {image_file} has no mask; expected "
                f"{folder / 'masks' / image_file.name}"
            )
        with Image.open(image_file) as im:
            rgb = im.convert("RGB").resize((size, size), Image.Resampling.BILINEAR)
        with Image.open(mask_file) as im:
            grey = im.convert("L").resize((size, size), Image.Resampling.BILINEAR)
        ids.append(image_file.stem)
        images.append(np.asarray(rgb, dtype=np.float32).transpose(2, 0, 1) / 255.0)  # (3, S, S)
        targets.append((np.asarray(grey) > 127).astype(np.float32)[None])  # (1, S, S)
    return torch.from_numpy(np.stack(images)), torch.from_numpy(np.stack(targets)), ids
