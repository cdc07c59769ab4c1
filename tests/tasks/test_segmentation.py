"""Segmentation learns on the Kvasir-SEG pairs of the mirror within a CI-sized budget."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import evaluate, run_config

from ncaflow.tasks import get_task
from ncaflow.training.train import train

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def test_segmentation_kvasir_learns(tmp_path: Path, mirror: Path) -> None:
    raw = {
        "task": "segmentation",
        "model": {
            "input_channels": 3,
            "output_channels": 1,
            "hidden_channels": 8,
            "hidden_width": 32,
        },
        "data": {"size": 32, "augment": False, "uncertainty_samples": 4},
    }
    cfg = run_config(
        raw,
        tmp_path,
        mirror,
        iterations=80,
        batch_size=3,
        steps=[12, 16],
        lr=3e-3,
        grad_clip=1.0,
        eval_every=40,
        early_stopping={"metric": "val_loss"},
    )
    task = get_task("segmentation")(config=cfg)
    task.setup()
    assert {k: len(v[0]) for k, v in task.splits.items()} == {"train": 3, "val": 1, "test": 1}
    result = train(cfg, tmp_path / "run")
    assert result.history[-1]["val_loss"] < result.history[0]["val_loss"]
    test = evaluate(tmp_path / "run", splits=("test",))
    assert 0.0 <= test["test_iou"] <= test["test_dice"] <= 1.0
    assert "test_uncertainty_auroc" in test and test["test_mean_variance"] > 0  # fire rate 0.5
