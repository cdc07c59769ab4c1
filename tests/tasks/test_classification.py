"""Classification learns on real BreastMNIST (the mirror) and on synthetic MedMNIST-format
data for the label layouts the mirror lacks; class-balanced sampling."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import evaluate, run_config, write_medmnist

from ncaflow.tasks import get_task
from ncaflow.training.train import train

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def test_breastmnist_real_data_learns(tmp_path: Path, mirror: Path) -> None:
    raw = {
        "task": "classification",
        "model": {
            "input_channels": 1,
            "output_channels": 2,
            "hidden_channels": 8,
            "hidden_width": 32,
        },
        "data": {"flag": "breastmnist", "readout": "vote", "balanced": True},
    }
    cfg = run_config(
        raw,
        tmp_path,
        mirror,
        iterations=150,
        batch_size=16,
        steps=[12, 16],
        lr=3e-3,
        grad_clip=1.0,
        eval_every=50,
        early_stopping={"metric": "val_auc", "mode": "max"},
    )
    result = train(cfg, tmp_path / "run")
    assert result.history[-1]["val_loss"] < result.history[0]["val_loss"], result.history
    assert result.best_metric > 0.58, result.history  # validation AUC; chance 0.5
    test = evaluate(tmp_path / "run", splits=("test",))
    assert test["test_auc"] > 0.55 and 0.0 <= test["test_acc"] <= 1.0 and "test_f1" in test


@pytest.mark.parametrize("readout", ["vote", "head"])
def test_synthetic_medmnist_both_readouts_and_n1_labels(tmp_path: Path, readout: str) -> None:
    mirror = tmp_path / "mirror"
    write_medmnist(mirror / "medmnist" / "breastmnist.npz", size=28)
    model = {
        "input_channels": 1,
        "output_channels": 2 if readout == "vote" else 0,
        "hidden_channels": 6,
        "hidden_width": 24,
        "head": 2 if readout == "head" else 0,
    }
    raw = {
        "task": "classification",
        "model": model,
        "data": {"flag": "breastmnist", "readout": readout, "augment": True},
    }
    cfg = run_config(
        raw,
        tmp_path,
        mirror,
        iterations=60,
        batch_size=16,
        steps=[8, 10],
        lr=5e-3,
        eval_every=30,
        early_stopping={"metric": "val_auc", "mode": "max"},
    )
    result = train(cfg, tmp_path / "run")
    assert result.best_metric > 0.9, result.history


def test_multilabel_chestmnist_layout(tmp_path: Path) -> None:
    mirror = tmp_path / "mirror"
    write_medmnist(mirror / "medmnist" / "chestmnist.npz", size=28, labels=14)
    raw = {
        "task": "classification",
        "model": {
            "input_channels": 1,
            "output_channels": 14,
            "hidden_channels": 4,
            "hidden_width": 16,
        },
        "data": {"flag": "chestmnist"},
    }
    cfg = run_config(
        raw,
        tmp_path,
        mirror,
        iterations=30,
        batch_size=16,
        steps=[6, 8],
        lr=5e-3,
        eval_every=30,
        early_stopping={"metric": "val_auc", "mode": "max"},
    )
    train(cfg, tmp_path / "run")
    metrics = evaluate(tmp_path / "run")
    assert 0.0 <= metrics["test_acc"] <= 1.0
    assert 0.0 <= metrics["test_auc"] <= 1.0  # macro over 14 labels, 13 of them noise


def test_class_balanced_sampling(tmp_path: Path) -> None:
    mirror = tmp_path / "mirror"
    write_medmnist(mirror / "medmnist" / "breastmnist.npz", size=28, n=(200, 20, 20))
    with np.load(mirror / "medmnist" / "breastmnist.npz") as f:
        arrays = dict(f)
    arrays["train_labels"][:180] = 1  # imbalanced: 90 % class 1
    np.savez(mirror / "medmnist" / "breastmnist.npz", **arrays)
    raw = {
        "task": "classification",
        "model": {"input_channels": 1, "output_channels": 2},
        "data": {"flag": "breastmnist", "balanced": True},
    }
    cfg = run_config(raw, tmp_path, mirror, batch_size=64)
    task = get_task("classification")(config=cfg)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        task.setup()
    gen = torch.Generator().manual_seed(0)
    labels = torch.cat([task.sample(gen).target for _ in range(20)])
    assert abs(labels.float().mean().item() - 0.5) < 0.06
