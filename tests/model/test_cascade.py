"""Cascades: coarse-to-fine levels train and keep their shapes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers import run_config, write_medmnist

from ncaflow.model.cascade import build_model
from ncaflow.training.train import train

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


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
