"""Own data without code: folders of PNGs through `ncaflow prepare`, `train` and `evaluate`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from own_folders import (
    classification_run,
    segmentation_run,
    write_classification_folder,
    write_segmentation_folder,
)
from PIL import Image

from ncaflow.cli import main
from ncaflow.guard.io import load_config_of
from ncaflow.inference.predict import predict


def _ncaflow(*argv: str | Path) -> None:
    assert main([str(a) for a in argv]) == 0


def _own_paths(model: Path) -> list[str]:
    """``--set`` for the data paths a model was trained on: a model file chooses no path
    outside the working folder (issue 26), so whoever evaluates it names them."""
    data = load_config_of(model)[0].data
    keys = ("images", "labels", "masks", "test_images", "test_labels", "test_masks", "folds")
    return [a for k in keys if data.get(k) for a in ("--set", f"data.{k}={data[k]}")]


def test_classification_folder_learns_bright_vs_dark(tmp_path: Path) -> None:
    folder = write_classification_folder(tmp_path / "own", n=30)
    train = {"iterations": 24, "batch_size": 8, "steps": [3, 4], "lr": 0.01, "eval_every": 12}
    run = classification_run(tmp_path / "run.yaml", folder, train=train)
    folds, model = tmp_path / "folds.json", tmp_path / "model"
    _ncaflow("prepare", "--config", run, "--out", folds, "--k", "2")
    split = json.loads(folds.read_text())
    assert split["n"] == 24 and len(split["folds"]) == 2  # 30 images - 6 held out for test
    _ncaflow("train", "--config", run, "--out", model, "--folds", folds, "--fold", "1")
    out = tmp_path / "metrics.json"
    _ncaflow("evaluate", "--model", model, "--out", out, "--split", "test", *_own_paths(model))
    metrics = json.loads(out.read_text())
    assert metrics["test_acc"] >= 5 / 6  # chance is 1/2 (3 bright, 3 dark test images)
    assert load_config_of(model)[1]["labels"] == {"0": "bright", "1": "dark"}
    images = sorted((folder / "images").glob("*.png"))[:4]  # predict names the classes
    assert {p.name for p in predict(model, images)} <= {"bright", "dark"}


def test_segmentation_folder_runs_every_stage(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = write_segmentation_folder(tmp_path / "own", n=8)
    test = write_segmentation_folder(tmp_path / "test", n=3, seed=1)
    run = segmentation_run(
        tmp_path / "run.yaml",
        folder,
        size=[16, 12],
        test_images=str(test / "images"),
        test_masks=str(test / "masks"),
    )
    folds, model = tmp_path / "folds.json", tmp_path / "model"
    _ncaflow("prepare", "--config", run, "--out", folds, "--k", "2")
    assert json.loads(folds.read_text())["n"] == 8  # the test folder stays out of the folds
    _ncaflow("train", "--config", run, "--out", model, "--folds", folds, "--fold", "0")
    out = tmp_path / "metrics.json"
    _ncaflow("evaluate", "--model", model, "--out", out, *_own_paths(model))
    metrics = json.loads(out.read_text())
    assert 0.0 <= metrics["test_dice"] <= 1.0 and "val_dice" in metrics
    assert load_config_of(model)[1]["dataset"] == "folder"
    capsys.readouterr()
    _ncaflow("export", "c", model, "--out", tmp_path / "nca.h")  # the grid: data.size [H, W]
    assert "2 states at 16x12" in capsys.readouterr().out
    image = sorted((test / "images").glob("*"))[0]  # a [H, W] model predicts a mask
    _ncaflow("predict", "--model", model, "--out", tmp_path / "masks", image)
    with Image.open(tmp_path / "masks" / f"{image.stem}.png") as mask, Image.open(image) as im:
        assert mask.size == im.size


@pytest.mark.parametrize("task", ["classification", "segmentation"])
def test_shipped_examples_prepare_a_folder(tmp_path: Path, task: str) -> None:
    """config/runs/own-*.yaml work as documented once data.images (and masks/labels) exist."""
    if task == "classification":
        folder = write_classification_folder(tmp_path / "own", n=10)
        targets = f"data.labels={folder / 'labels.csv'}"
    else:
        folder = write_segmentation_folder(tmp_path / "own", n=10)
        targets = f"data.masks={folder / 'masks'}"
    run = Path(__file__).resolve().parents[2] / "config" / "runs" / f"own-{task}.yaml"
    folds = tmp_path / "folds.json"
    images = f"data.images={folder / 'images'}"
    _ncaflow("prepare", "--config", run, "--out", folds, "--set", images, "--set", targets)
    assert json.loads(folds.read_text())["k"] == 5


def test_grey_segmentation_images_train_with_one_input_channel(tmp_path: Path) -> None:
    folder = write_segmentation_folder(tmp_path / "own", n=6)
    for image in (folder / "images").iterdir():
        Image.open(image).convert("L").save(image)
    run = segmentation_run(tmp_path / "run.yaml", folder, train={"log_images_every": 1})
    raw = yaml.safe_load(run.read_text())
    raw["model"]["input_channels"] = 1
    run.write_text(yaml.safe_dump(raw))
    _ncaflow("train", "--config", run, "--out", tmp_path / "model")  # previews grey as RGB
    assert load_config_of(tmp_path / "model")[1]["input"] == "grey image in [0, 1]"
