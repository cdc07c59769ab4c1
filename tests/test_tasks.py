"""Every task learns on real data (the mirror) within a CI-sized budget, plus
synthetic MedMNIST-format data for the label layouts the mirror lacks."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from committed import committed_text
from PIL import Image

from ncaflow.cascade import build_model
from ncaflow.config import ConfigError, RunConfig, from_dict
from ncaflow.evaluate import evaluate as _evaluate
from ncaflow.io import load_config_of
from ncaflow.tasks import get_task
from ncaflow.train import train
from ncaflow.uncertainty import stochastic_rollouts
from ncaflow.viz.animate import animate

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def evaluate(paths: Any, *, overrides: tuple[str, ...] | list[str] = (), **kw: Any) -> Any:
    """``ncaflow.evaluate`` on the data a test trained on: a model file chooses no data
    folder (issue 26), so the caller names its cache and mirror, as a user would."""
    first = paths[0] if isinstance(paths, list) else paths
    data = load_config_of(first)[0].data
    where = [f"data.{k}={data[k]}" for k in ("root", "mirror") if data.get(k)]
    return _evaluate(paths, overrides=[*where, *overrides], **kw)


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


def test_selfclass_mnist_beats_chance(tmp_path: Path, mirror: Path) -> None:
    raw = {
        "task": "selfclass",
        "model": {
            "input_channels": 1,
            "output_channels": 10,
            "hidden_channels": 8,
            "hidden_width": 64,
            "alive_channel": 0,
        },
        "data": {"dataset": "mnist", "test_size": 500, "val_size": 300},
    }
    cfg = run_config(
        raw,
        tmp_path,
        mirror,
        iterations=240,
        batch_size=16,
        steps=[8, 12],
        lr=5e-3,
        grad_clip=1.0,
        eval_every=80,
        early_stopping={"metric": "val_acc", "mode": "max"},
    )
    result = train(cfg, tmp_path / "run")
    losses = [r["val_loss"] for r in result.history]
    assert losses[-1] < losses[0] < 2.31, losses  # 2.30 = ln 10: uniform guessing
    assert result.best_metric > 0.2, result.history  # chance: 0.1 (the largest class: 0.11)
    test = evaluate(tmp_path / "run", splits=("test",))
    assert test["test_acc"] > 0.18


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


def test_uncertainty_is_deterministic_for_a_seed(tmp_path: Path) -> None:
    raw = {
        "task": "segmentation",
        "model": {"input_channels": 3, "output_channels": 1, "hidden_channels": 4},
    }
    cfg = from_dict(RunConfig, raw)
    torch.manual_seed(0)
    model = build_model(cfg)
    torch.nn.init.normal_(model.fc2.weight, std=0.1)
    x = torch.rand(2, cfg.model.channels, 12, 12)

    def run(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        return stochastic_rollouts(
            model,
            x,
            6,
            n=4,
            generator=torch.Generator().manual_seed(seed),
            readout=lambda s: torch.sigmoid(s[:, 3:4]),
        )

    (m1, v1), (m2, v2), (_, v3) = run(1), run(1), run(2)
    assert torch.equal(m1, m2) and torch.equal(v1, v2) and not torch.equal(v1, v3)
    assert m1.shape == v1.shape == (2, 1, 12, 12) and (v1 >= 0).all() and v1.sum() > 0


def test_gif_has_one_frame_per_kept_step(tmp_path: Path, mirror: Path) -> None:
    raw = {
        "task": "growing",
        "model": {"hidden_channels": 4, "alive_channel": 3},
        "data": {"size": 16, "pad": 4, "pool_size": 8},
    }
    cfg = run_config(raw, tmp_path, mirror, batch_size=4)
    task = get_task("growing")(config=cfg)
    task.setup()
    model = build_model(cfg)
    n = animate(model, task, tmp_path / "a.gif", steps=12, every=3, scale=2)
    assert n == 5
    with Image.open(tmp_path / "a.gif") as gif:
        assert gif.n_frames == 5
        assert gif.size == (2 * 24 * 2 + 4, 2 * 24 + 14)


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


def test_augment_modes_per_image() -> None:
    """hflip only mirrors left-right; dihedral reaches all 8 symmetries; each image draws its
    own transform; shifts translate with the edge repeated and keep the shape."""
    from ncaflow.tasks.classification import augment

    img = torch.arange(25.0).view(1, 1, 5, 5)
    batch = img.expand(64, -1, -1, -1)
    gen = torch.Generator().manual_seed(0)
    hflip = augment(batch, gen, "hflip")
    assert all(torch.equal(a, img[0]) or torch.equal(a, img[0].flip(2)) for a in hflip)
    assert 0 < sum(torch.equal(a, img[0]) for a in hflip) < 64  # per image, not per batch
    dihedral = augment(batch, gen, True)
    assert len({tuple(a.flatten().tolist()) for a in dihedral}) == 8
    shifted = augment(batch, gen, False, shift=1)
    assert shifted.shape == batch.shape
    for a in shifted:  # every result is the image moved by at most one pixel, edges repeated
        padded = torch.nn.functional.pad(img, (1, 1, 1, 1), mode="replicate")[0]
        assert any(
            torch.equal(a, padded[:, y : y + 5, x : x + 5]) for y in range(3) for x in range(3)
        )
    assert torch.equal(augment(batch, gen, False, 0), batch)


def test_eval_rollouts_average_scores(tmp_path: Path) -> None:
    """data.eval_rollouts=n scores every image by the mean of n stochastic rollouts."""
    mirror = tmp_path / "mirror"
    write_medmnist(mirror / "medmnist" / "breastmnist.npz", size=28)
    model = {"input_channels": 1, "output_channels": 0, "hidden_channels": 6, "head": 2}
    raw = {"task": "classification", "model": model, "data": {"readout": "head"}}
    cfg = run_config(raw, tmp_path, mirror, iterations=20, batch_size=8, steps=[6], eval_every=20)
    train(cfg, tmp_path / "run")
    one = evaluate(tmp_path / "run", splits=("val",))
    four = evaluate(tmp_path / "run", splits=("val",), overrides=["data.eval_rollouts=4"])
    again = evaluate(tmp_path / "run", splits=("val",), overrides=["data.eval_rollouts=4"])
    assert four == again  # seeded
    assert four["val_loss"] != one["val_loss"]  # other rollouts, averaged
    with pytest.raises(ConfigError, match=r"data\.eval_rollouts"):
        evaluate(tmp_path / "run", overrides=["data.eval_rollouts=0"])


def test_eval_hflip_averages_the_image_and_its_mirror(tmp_path: Path) -> None:
    """data.eval_hflip scores every image by the mean over it and its left-right mirror: with
    no fire-mask randomness, its loss is the mean of the losses on the data and on the data
    mirrored on disk."""
    mirror, flipped = tmp_path / "mirror", tmp_path / "flipped"
    write_medmnist(mirror / "medmnist" / "breastmnist.npz", size=28)
    data = dict(np.load(mirror / "medmnist" / "breastmnist.npz"))
    for key in [k for k in data if k.endswith("_images")]:
        data[key] = data[key][:, :, ::-1]
    (flipped / "medmnist").mkdir(parents=True)
    np.savez(flipped / "medmnist" / "breastmnist.npz", **data)
    model = {"input_channels": 1, "output_channels": 0, "hidden_channels": 6, "head": 2}
    model["fire_rate"] = 1.0
    raw = {"task": "classification", "model": model, "data": {"readout": "head"}}
    cfg = run_config(raw, tmp_path, mirror, iterations=20, batch_size=8, steps=[6], eval_every=20)
    train(cfg, tmp_path / "run")
    plain = evaluate(tmp_path / "run", splits=("val",))
    mirrored = evaluate(
        tmp_path / "run",
        splits=("val",),
        overrides=[f"data.mirror={flipped}", f"data.root={tmp_path / 'cache-flipped'}"],
    )
    both = evaluate(tmp_path / "run", splits=("val",), overrides=["data.eval_hflip=true"])
    assert plain["val_loss"] != pytest.approx(mirrored["val_loss"], rel=1e-6)
    expected = (plain["val_loss"] + mirrored["val_loss"]) / 2
    assert both["val_loss"] == pytest.approx(expected, rel=1e-5)


def test_ensemble_averages_its_members_scores(tmp_path: Path) -> None:
    """`ncaflow evaluate --model A --model B`: the class scores averaged over both members.
    With no fire-mask randomness and a head readout, the ensemble's loss is the mean of the
    members' losses and its parameters their sum; members of other data are refused."""
    mirror = tmp_path / "mirror"
    write_medmnist(mirror / "medmnist" / "breastmnist.npz", size=28)
    model = {"input_channels": 1, "output_channels": 0, "hidden_channels": 6, "head": 2}
    model["fire_rate"] = 1.0
    raw = {"task": "classification", "model": model, "data": {"readout": "head"}}
    runs = [tmp_path / "a", tmp_path / "b"]
    for seed, run in enumerate(runs):
        cfg = run_config(raw, tmp_path, mirror, iterations=10, batch_size=8, steps=[6], seed=seed)
        train(cfg, run)
    single = [evaluate(run, splits=("val",)) for run in runs]
    both = evaluate(runs, splits=("val",))
    assert single[0]["val_loss"] != pytest.approx(single[1]["val_loss"], rel=1e-6)
    expected = (single[0]["val_loss"] + single[1]["val_loss"]) / 2
    assert both["val_loss"] == pytest.approx(expected, rel=1e-5)
    assert both["parameters"] == single[0]["parameters"] + single[1]["parameters"]
    assert both["members"] == [str(run) for run in runs]

    voting = {**model, "output_channels": 2, "head": 0}  # per-pixel votes: other scores
    other = {"task": "classification", "model": voting, "data": {"readout": "vote"}}
    cfg = run_config(other, tmp_path, mirror, iterations=2, batch_size=8, steps=[6])
    train(cfg, tmp_path / "c")
    with pytest.raises(
        ConfigError, match=r"must share task, data\.flag, data\.size and data\.readout"
    ):
        evaluate([runs[0], tmp_path / "c"], splits=("val",))


def test_every_task_declares_headline_metrics_its_evaluation_reports() -> None:
    """Task.headline (the reference-runs table's columns) names metrics the task's evaluation
    really writes: the main job's aggregate tables, one per task, carry each as a column.
    Task.predicts is "labels", "masks" or None with a reason that points elsewhere."""
    import csv

    from ncaflow.tasks import TASKS

    tables = {  # task -> the main job's aggregate table of a model of that task
        "growing": "growing.csv",
        "selfclass": "selfclass.csv",
        "classification": "breastmnist.csv",
        "segmentation": "kvasir.csv",
    }
    assert set(tables) == set(TASKS), "a new task needs a table here"
    for name, table in tables.items():
        task = get_task(name)
        columns = next(csv.reader(committed_text(f"results/tables/{table}").splitlines()))
        assert task.headline, name
        for key, label in task.headline:
            assert f"{key}_mean" in columns, (name, key)
            assert label, (name, key)
        assert task.predicts in ("labels", "masks", None), name
        if task.predicts is None:
            assert "use `ncaflow" in task.predict_instead, name
