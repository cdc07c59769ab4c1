"""Cascades: coarse-to-fine levels train and keep their shapes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from ncaflow.config import RunConfig, from_dict
from ncaflow.model.cascade import build_model
from ncaflow.training.train import train

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def run_config(raw: dict[str, Any], tmp: Path, mirror: Path, **train_kw: Any) -> RunConfig:
    raw = {
        **raw,
        "data": {"root": str(tmp / "cache"), "mirror": str(mirror), **raw.get("data", {})},
    }
    train_cfg = {"progress": False, "device": "cpu", "checkpoint_every": 1000, **train_kw}
    cfg = from_dict(RunConfig, {**raw, "train": train_cfg})
    cfg.validate()
    return cfg


def write_medmnist(
    path: Path, *, size: int = 16, labels: int = 1, n: tuple[int, int, int] = (96, 32, 32)
) -> None:
    """A learnable MedMNIST-format npz: label 0 means 'bright top half' (binary),
    labels 1.. (multi-label) are noise. Labels stored (N, L) as MedMNIST does."""
    rng = np.random.default_rng(0)
    arrays = {}
    for split, count in zip(("train", "val", "test"), n, strict=True):
        y = rng.integers(0, 2, (count, labels))
        x = rng.integers(0, 60, (count, size, size))
        x[y[:, 0] == 1, : size // 2] += 150
        arrays[f"{split}_images"] = x.astype(np.uint8)
        arrays[f"{split}_labels"] = y.astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)


def test_cascade_trains_and_keeps_shapes(tmp_path: Path) -> None:
    mirror = tmp_path / "mirror"
    write_medmnist(mirror / "medmnist" / "breastmnist.npz", size=28)
    raw = {
        "task": "classification",
        "model": {
            "input_channels": 1,
            "output_channels": 2,
            "hidden_channels": 6,
            "hidden_width": 24,
        },
        "data": {"flag": "breastmnist"},
        "cascade": {"scales": [4, 2, 1], "steps": [4, 4, 4]},
    }
    cfg = run_config(
        raw,
        tmp_path,
        mirror,
        iterations=60,
        batch_size=16,
        steps=[12],
        lr=5e-3,
        eval_every=30,
        early_stopping={"metric": "val_auc", "mode": "max"},
    )
    model = build_model(cfg)
    seen = []
    out = model(
        torch.rand(2, cfg.model.channels, 28, 28), callback=lambda t, s: seen.append(s.shape)
    )
    assert out.shape == (2, cfg.model.channels, 28, 28)
    assert len(seen) == 12 and all(s == (2, cfg.model.channels, 28, 28) for s in seen)
    assert len(model.levels) == 3
    result = train(cfg, tmp_path / "run")
    assert result.best_metric > 0.9, result.history
