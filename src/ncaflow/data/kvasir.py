"""Kvasir-SEG polyp segmentation: RGB images and binary masks at a fixed square size."""

from __future__ import annotations

import os
import shutil
import tempfile
import zipfile
from pathlib import Path

import torch

from ncaflow.data.images import read_pairs
from ncaflow.data.sources import SOURCES, DataError, fetch, mirror_dir, refetch_hint
from ncaflow.runtime.safe_io import dir_mode

__all__ = ["load_kvasir"]

_FOLDER = "kvasir-seg"  # mirror and cache layout: kvasir-seg/images/*.jpg, kvasir-seg/masks/*.jpg


def _has_layout(folder: Path) -> bool:
    return (folder / "images").is_dir() and (folder / "masks").is_dir()


def _extract(zip_path: Path, dest: Path, hint: str) -> None:
    """Extract the Kvasir-SEG zip into `dest` atomically (temp folder, then rename)."""
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}."))
    try:
        try:
            with zipfile.ZipFile(zip_path) as zf:
                zf.extractall(tmp)  # zipfile drops absolute paths and '..' parts
        except (zipfile.BadZipFile, OSError) as exc:
            raise DataError(f"cannot extract {zip_path} ({exc}); {hint}") from exc
        roots = sorted({p.parent for p in tmp.rglob("images") if _has_layout(p.parent)})
        if not roots:
            raise DataError(f"{zip_path} has no folder with images/ and masks/ inside; {hint}")
        os.chmod(roots[0], dir_mode())  # the zip's images/ may lie in mkdtemp's 0700 folder
        try:
            os.rename(roots[0], dest)
        except OSError:
            if not _has_layout(dest):  # another process may have won the race
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _kvasir_folder(root: str | Path, mirror: str | Path | None) -> Path:
    mdir = mirror_dir(mirror)
    if mdir is not None and _has_layout(mdir / _FOLDER):
        return mdir / _FOLDER
    cached = Path(root) / _FOLDER
    if not _has_layout(cached):
        zip_path = fetch(SOURCES["kvasir-seg"], root=root, mirror=mirror)
        _extract(zip_path, cached, refetch_hint(SOURCES["kvasir-seg"], zip_path, mirror))
    return cached


def load_kvasir(
    *, size: int = 64, root: str | Path, mirror: str | Path | None = None
) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Load every Kvasir-SEG image/mask pair, resized to `size` x `size`.

    Sources: the mirror folder ``kvasir-seg/{images,masks}`` if present, else the
    official zip (fetched, then extracted once into ``root/kvasir-seg``).
    Images are resized with bilinear filtering (aspect ratio not kept). Masks are read
    as grey, resized with bilinear filtering, then thresholded at 127 (value > 127 is
    foreground), which also removes JPEG ringing.

    A pair whose mask differs in size from its image is an error, not a warning: it
    means the files do not belong together (resizing both would hide misaligned
    targets). So are an image without a mask, a mask without an image, and an
    unreadable file; each error names the file.

    Returns:
        images: float32 ``(N, 3, size, size)`` in [0, 1]; masks: float32
        ``(N, 1, size, size)`` in {0, 1}; ids: sorted file stems, one per image.
    """
    if size < 1:
        raise DataError(f"Kvasir-SEG size must be >= 1, got {size}")
    folder = _kvasir_folder(root, mirror)
    images, masks, ids = read_pairs(
        folder / "images",
        folder / "masks",
        size=(size, size),
        channels=3,
        keys=("Kvasir-SEG images", "Kvasir-SEG masks"),
    )
    return torch.from_numpy(images), torch.from_numpy(masks), ids
