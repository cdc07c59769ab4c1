"""ncaflow.data.folder and ncaflow.data.images: own image folders, labels CSVs, pairs."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from own_folders import write_classification_folder, write_segmentation_folder
from PIL import Image

from ncaflow.config import ConfigError
from ncaflow.data import DataError
from ncaflow.data.folder import (
    class_names,
    holdout_split,
    load_own_classification,
    load_own_segmentation,
    read_labels,
)
from ncaflow.data.images import image_array, read_pairs
from ncaflow.tasks.runconfig import load_config


def test_class_names_numeric_then_text_order() -> None:
    assert class_names(["10", "2", "0", "2"]) == ["0", "2", "10"]  # numbers: numeric order
    assert class_names(["b", "a", "10", "2"]) == ["10", "2", "a", "b"]  # else: text order


def test_read_labels_bom_crlf_blank_lines(tmp_path: Path) -> None:
    csv = tmp_path / "l.csv"
    csv.write_bytes("\ufefffile,label\r\na.png, cat \r\n\r\nb.png,dog\r\n".encode())
    assert read_labels(csv, key="data.labels") == [("a.png", "cat", 2), ("b.png", "dog", 4)]


def test_holdout_split_is_stratified_and_disjoint() -> None:
    labels = np.array([0] * 12 + [1] * 6)
    parts = holdout_split(18, labels=labels, test_fraction=0.2, val_fraction=0.2, seed=3)
    every = np.concatenate(list(parts.values()))
    assert sorted(every.tolist()) == list(range(18))
    for split in ("train", "val", "test"):
        assert set(labels[parts[split]].tolist()) == {0, 1}, split
    again = holdout_split(18, labels=labels, test_fraction=0.2, val_fraction=0.2, seed=3)
    assert all(np.array_equal(parts[k], again[k]) for k in parts)


def test_classification_folder_with_test_folder_and_subfolders(tmp_path: Path) -> None:
    own = write_classification_folder(tmp_path / "own", n=12)
    (own / "images" / "more").mkdir()
    Image.new("L", (5, 7), 200).save(own / "images" / "more" / "x.png")
    with open(own / "labels.csv", "a") as f:
        f.write("more/x.png,bright\n")
    test = write_classification_folder(tmp_path / "test", n=4, seed=1)
    data = load_own_classification(
        images=str(own / "images"),
        labels=str(own / "labels.csv"),
        test_images=str(test / "images"),
        test_labels=str(test / "labels.csv"),
        size=[6, 8],
    )
    assert data.images.shape == (17, 1, 6, 8) and data.images.dtype == np.float32
    assert data.names == ["bright", "dark"] and data.info()["task"] == "binary-class"
    assert data.parts["test"].tolist() == [13, 14, 15, 16]  # the test folder, after the pool
    assert len(data.parts["train"]) + len(data.parts["val"]) == 13
    bright = data.images[data.targets == 0].mean()
    assert bright > data.images[data.targets == 1].mean() + 0.3


def test_unknown_test_label_is_named(tmp_path: Path) -> None:
    own = write_classification_folder(tmp_path / "own", n=6)
    test = write_classification_folder(tmp_path / "test", n=2)
    (test / "labels.csv").write_text("file,label\nim00.png,bright\nim01.png,grey\n")
    with pytest.raises(DataError, match=r"label 'grey'.*bright, dark"):
        load_own_classification(
            images=str(own / "images"),
            labels=str(own / "labels.csv"),
            test_images=str(test / "images"),
            test_labels=str(test / "labels.csv"),
            size=4,
        )


def test_channels_from_the_images_or_the_config(tmp_path: Path) -> None:
    grey = write_classification_folder(tmp_path / "grey", n=6)
    rgb = write_classification_folder(tmp_path / "rgb", n=6, rgb=True)
    keys = {"size": 4, "test_fraction": 0.0, "val_fraction": 0.4}
    load = load_own_classification
    assert load(images=str(grey / "images"), labels=str(grey / "labels.csv"), **keys).channels == 1
    assert load(images=str(rgb / "images"), labels=str(rgb / "labels.csv"), **keys).channels == 3
    as_rgb = load(images=str(grey / "images"), labels=str(grey / "labels.csv"), channels=3, **keys)
    assert as_rgb.channels == 3 and np.allclose(as_rgb.images[:, 0], as_rgb.images[:, 2])


def test_sixteen_bit_grey_is_scaled_to_unit_range(tmp_path: Path) -> None:
    path = tmp_path / "deep.png"
    Image.fromarray(np.full((4, 4), 65535 // 2, np.uint16)).save(path)
    with Image.open(path) as im:
        arr = image_array(im, channels=1, size=(4, 4))
    assert arr.shape == (1, 4, 4) and abs(float(arr.mean()) - 0.5) < 0.01


def test_masks_zero_one_and_zero_255_mean_the_same(tmp_path: Path) -> None:
    own = write_segmentation_folder(tmp_path / "own", n=4)  # 0/1 PNG masks
    x, m, ids = read_pairs(own / "images", own / "masks", size=(16, 16), channels=None)
    for i in ids:
        path = own / "masks" / f"{i}.png"
        Image.fromarray(np.asarray(Image.open(path)) * np.uint8(255)).save(path)
    _, m255, _ = read_pairs(own / "images", own / "masks", size=(16, 16), channels=None)
    assert x.shape == (4, 3, 16, 16) and np.array_equal(m, m255)
    assert 0.05 < float(m.mean()) < 0.5


def test_segmentation_holdout_without_test_folder(tmp_path: Path) -> None:
    own = write_segmentation_folder(tmp_path / "own", n=10)
    data = load_own_segmentation(images=str(own / "images"), masks=str(own / "masks"), size=8)
    assert data.images.shape == (10, 3, 8, 8) and data.targets.shape == (10, 1, 8, 8)
    assert [len(data.parts[k]) for k in ("train", "val", "test")] == [6, 2, 2]


@pytest.mark.parametrize(
    ("data", "key"),
    [
        ({"dataset": "folder", "masks": "m"}, "data.images"),
        ({"dataset": "folder", "images": "i"}, "data.masks"),
        ({"dataset": "folder", "images": "i", "masks": "m", "test_images": "t"}, "data.test_masks"),
        ({"images": "i"}, "data.images"),  # Kvasir-SEG reads no own folder
        ({"dataset": "folder", "images": "i", "masks": "m", "channels": 2}, "data.channels"),
        ({"size": [4, 5, 6]}, "data.size"),
        ({"test_fraction": 0.5, "val_fraction": 0.5}, "data.val_fraction"),
    ],
)
def test_folder_keys_are_checked_when_the_config_loads(
    tmp_path: Path, data: dict[str, object], key: str
) -> None:
    import yaml

    path = tmp_path / "run.yaml"
    model = {"input_channels": 3, "output_channels": 1}
    path.write_text(yaml.safe_dump({"task": "segmentation", "model": model, "data": data}))
    with pytest.raises(ConfigError, match=f"{path}: key '{key}'"):
        load_config(path)


def _own_config(tmp_path: Path, task: str, model: dict[str, object], **data: object) -> Path:
    import yaml

    path = tmp_path / "run.yaml"
    raw = {"task": task, "model": model, "data": {"dataset": "folder", "size": 10, **data}}
    path.write_text(yaml.safe_dump(raw))
    return path


def test_own_data_decides_channels_and_classes(tmp_path: Path) -> None:
    """As MedMNIST's INFO does: model.input_channels from the images (or data.channels),
    the head or vote channels from the labels CSV; a run config need not state them."""
    grey = write_classification_folder(tmp_path / "grey", n=6)
    rows = (grey / "labels.csv").read_text().splitlines()
    rows[1] = rows[1].replace("bright", "medium")  # three labels
    (grey / "labels.csv").write_text("\n".join(rows) + "\n")
    colour = write_segmentation_folder(tmp_path / "colour", n=3)
    model = {"hidden_channels": 4, "hidden_width": 8}
    files = {"images": str(grey / "images"), "labels": str(grey / "labels.csv")}

    head = load_config(_own_config(tmp_path, "classification", model, readout="head", **files))
    assert (head.model.input_channels, head.model.head) == (1, 3)
    vote = load_config(_own_config(tmp_path, "classification", model, readout="vote", **files))
    assert (vote.model.input_channels, vote.model.output_channels) == (1, 3)
    rgb = load_config(
        _own_config(tmp_path, "classification", model, readout="head", channels=3, **files)
    )
    assert rgb.model.input_channels == 3
    masks = {"images": str(colour / "images"), "masks": str(colour / "masks")}
    seg = load_config(
        _own_config(tmp_path, "segmentation", {**model, "output_channels": 1}, **masks)
    )
    assert seg.model.input_channels == 3


@pytest.mark.parametrize(
    ("model", "data", "needle"),
    [
        ({"head": 3}, {}, "key 'model.head': 3 contradicts the 2 labels in"),
        ({"input_channels": 3}, {}, "key 'model.input_channels': 3 contradicts the images in"),
        ({"input_channels": 1}, {"channels": 3}, "contradicts data.channels: 3; set it to 3"),
        ({}, {"labels": "missing.csv"}, "data.labels: no labels file missing.csv"),
        ({}, {"images": "nowhere"}, "data.images: nowhere does not exist"),
    ],
)
def test_own_data_keys_that_contradict_the_files(
    tmp_path: Path, model: dict[str, object], data: dict[str, object], needle: str
) -> None:
    own = write_classification_folder(tmp_path / "own", n=4)
    files = {"images": str(own / "images"), "labels": str(own / "labels.csv"), "readout": "head"}
    path = _own_config(
        tmp_path, "classification", {"hidden_channels": 4, **model}, **{**files, **data}
    )
    with pytest.raises(ConfigError, match=re.escape(f"{path}: ") + ".*" + re.escape(needle)):
        load_config(path)
