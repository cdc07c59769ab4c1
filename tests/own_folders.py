"""Tiny synthetic "own data" folders and run configs (data.dataset: folder) for the tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import yaml
from PIL import Image

FAST_TRAIN: dict[str, Any] = {
    "iterations": 2,
    "batch_size": 2,
    "steps": [2],
    "eval_every": 2,
    "checkpoint_every": 2,
    "log_images_every": 1000,
    "progress": False,
    "device": "cpu",
    "threads": 1,
}


def write_classification_folder(
    root: Path, *, n: int = 24, size: int = 10, rgb: bool = False, seed: int = 0
) -> Path:
    """``root/images/imNN.png`` (bright or dark, with noise) and ``root/labels.csv``.

    Every other image is bright (label ``bright``), the rest dark (``dark``).
    """
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    rows = ["file,label"]
    for i in range(n):
        bright = i % 2 == 0
        shape = (size, size, 3) if rgb else (size, size)
        grey = np.clip((0.75 if bright else 0.25) + 0.15 * rng.standard_normal(shape), 0, 1)
        Image.fromarray((grey * 255).astype(np.uint8)).save(root / "images" / f"im{i:02d}.png")
        rows.append(f"im{i:02d}.png,{'bright' if bright else 'dark'}")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    return root


def write_segmentation_folder(root: Path, *, n: int = 10, size: int = 16, seed: int = 0) -> Path:
    """``root/images/sN.jpg`` (RGB, a bright square on dark) and ``root/masks/sN.png`` (0/1)."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(exist_ok=True)
    for i in range(n):
        mask = np.zeros((size, size), np.uint8)
        y, x = rng.integers(1, size // 2, 2)
        mask[y : y + size // 3, x : x + size // 3] = 1
        grey = np.clip(0.2 + 0.6 * mask + 0.05 * rng.standard_normal((size, size)), 0, 1)
        rgb = np.repeat((grey * 255).astype(np.uint8)[..., None], 3, axis=2)
        Image.fromarray(rgb).save(root / "images" / f"s{i}.jpg")
        Image.fromarray(mask).save(root / "masks" / f"s{i}.png")
    return root


def classification_run(
    path: Path, folder: Path, *, train: dict[str, Any] | None = None, **data: Any
) -> Path:
    """Write a run config for `folder` (from write_classification_folder) to `path`."""
    raw = {
        "task": "classification",
        "model": {
            "input_channels": 1,
            "output_channels": 0,
            "hidden_channels": 6,
            "hidden_width": 16,
            "head": 2,
        },
        "data": {
            "dataset": "folder",
            "images": str(folder / "images"),
            "labels": str(folder / "labels.csv"),
            "size": 10,
            "readout": "head",
            **data,
        },
        "train": {**FAST_TRAIN, **(train or {})},
    }
    path.write_text(yaml.safe_dump(raw))
    return path


def segmentation_run(
    path: Path, folder: Path, *, train: dict[str, Any] | None = None, **data: Any
) -> Path:
    """Write a run config for `folder` (from write_segmentation_folder) to `path`."""
    raw = {
        "task": "segmentation",
        "model": {
            "input_channels": 3,
            "output_channels": 1,
            "hidden_channels": 4,
            "hidden_width": 16,
        },
        "data": {
            "dataset": "folder",
            "images": str(folder / "images"),
            "masks": str(folder / "masks"),
            "size": 16,
            "uncertainty_samples": 2,
            "eval_batch": 4,
            **data,
        },
        "train": {**FAST_TRAIN, **(train or {})},
    }
    path.write_text(yaml.safe_dump(raw))
    return path
