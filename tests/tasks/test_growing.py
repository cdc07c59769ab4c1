"""The growing task learns the lizard emoji (the mirror) within a CI-sized budget."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import evaluate, run_config

from ncaflow.tasks import get_task
from ncaflow.training.train import train

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def test_growing_lizard_loss_falls(tmp_path: Path, mirror: Path) -> None:
    raw = {
        "task": "growing",
        "model": {
            "output_channels": 4,
            "hidden_channels": 8,
            "hidden_width": 64,
            "alive_channel": 3,
        },
        "data": {
            "target": "1f98e",
            "size": 16,
            "pad": 4,
            "pool_size": 32,
            "damage": 0,
            "persistence_steps": 60,
        },
    }
    cfg = run_config(
        raw,
        tmp_path,
        mirror,
        iterations=150,
        batch_size=4,
        steps=[20, 28],
        lr=2e-3,
        grad_norm=True,
        eval_every=50,
    )
    task = get_task("growing")(config=cfg)
    task.setup()
    empty = task.mse(task.seed(1)).item()  # what an untrained NCA scores: nothing grows
    result = train(cfg, tmp_path / "run")
    losses = [r["val_loss"] for r in result.history]
    assert losses[-1] < 0.5 * empty, (empty, losses)
    metrics = evaluate(tmp_path / "run", splits=("test",))
    assert {"test_mse", "test_persistence_mse", "test_regrowth_mse", "test_damaged_mse"} <= set(
        metrics
    )
