from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ncaflow.data import DataError, DataWarning, load_medmnist, medmnist_info

_SPLITS = {"train": 12, "val": 4, "test": 6}


def _write_npz(
    mirror: Path, filename: str, *, image_shape: tuple[int, ...], label_shape: tuple[int, ...]
) -> Path:
    rng = np.random.default_rng(0)
    arrays: dict[str, Any] = {}
    for split, n in _SPLITS.items():
        arrays[f"{split}_images"] = rng.integers(0, 256, (n, *image_shape), dtype=np.uint8)
        arrays[f"{split}_labels"] = rng.integers(0, 2, (n, *label_shape), dtype=np.uint8)
    (mirror / "medmnist").mkdir(parents=True, exist_ok=True)
    np.savez(mirror / "medmnist" / filename, **arrays)
    return mirror / "medmnist" / filename


def _load(**kwargs: object) -> tuple[np.ndarray, np.ndarray]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)  # synthetic files: md5 is not official
        return load_medmnist(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("label_shape", [(), (1,)])
def test_synthetic_binary(tmp_path: Path, label_shape: tuple[int, ...]) -> None:
    _write_npz(tmp_path / "m", "breastmnist.npz", image_shape=(28, 28), label_shape=label_shape)
    for split, n in _SPLITS.items():
        x, y = _load(flag="breastmnist", split=split, root=tmp_path / "c", mirror=tmp_path / "m")
        assert x.shape == (n, 1, 28, 28) and x.dtype == np.float32
        assert x.min() >= 0.0 and x.max() <= 1.0
        assert y.shape == (n,) and y.dtype == np.int64


def test_synthetic_rgb_size_64(tmp_path: Path) -> None:
    _write_npz(tmp_path / "m", "pathmnist_64.npz", image_shape=(64, 64, 3), label_shape=(1,))
    x, y = _load(flag="pathmnist", split="val", size=64, root=tmp_path / "c", mirror=tmp_path / "m")
    assert x.shape == (4, 3, 64, 64) and y.shape == (4,)
    assert (tmp_path / "c" / "pathmnist_64.npz").is_file()


def test_synthetic_multi_label(tmp_path: Path) -> None:
    _write_npz(tmp_path / "m", "chestmnist.npz", image_shape=(28, 28), label_shape=(14,))
    x, y = _load(flag="chestmnist", split="train", root=tmp_path / "c", mirror=tmp_path / "m")
    assert x.shape == (12, 1, 28, 28) and y.shape == (12, 14) and y.dtype == np.int64


def test_wrong_channel_count_is_an_error(tmp_path: Path) -> None:
    _write_npz(tmp_path / "m", "pathmnist.npz", image_shape=(28, 28), label_shape=(1,))
    with pytest.raises(DataError, match="3 channel"):
        _load(flag="pathmnist", split="test", root=tmp_path / "c", mirror=tmp_path / "m")


def test_shared_breastmnist(shared_mirror: Path, tmp_path: Path) -> None:
    sizes = {}
    for split in ("train", "val", "test"):
        x, y = _load(flag="breastmnist", split=split, root=tmp_path, mirror=shared_mirror)
        assert x.shape[1:] == (1, 28, 28) and y.shape == (len(x),)
        assert set(np.unique(y)) == {0, 1}
        sizes[split] = len(x)
    assert sizes == {"train": 546, "val": 78, "test": 156}


def test_bad_options(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"3D dataset.*valid flags: .*breastmnist"):
        load_medmnist(flag="organmnist3d", split="train", root=tmp_path)
    with pytest.raises(DataError, match=r"unknown.*valid flags"):
        load_medmnist(flag="mnist", split="train", root=tmp_path)
    with pytest.raises(DataError, match=r"valid sizes: \[28, 64, 128, 224\]"):
        load_medmnist(flag="breastmnist", split="train", size=32, root=tmp_path)
    with pytest.raises(DataError, match="split"):
        load_medmnist(flag="breastmnist", split="dev", root=tmp_path)  # type: ignore[arg-type]


def test_medmnist_info() -> None:
    chest = medmnist_info("chestmnist")
    assert chest["task"] == "multi-label, binary-class" and chest["multi_label"]
    assert chest["n_classes"] == 14 and chest["n_channels"] == 1
    assert chest["label_names"][0] == "atelectasis" and chest["label"]["13"] == "hernia"
    breast = medmnist_info("breastmnist")
    assert (breast["task"], breast["n_classes"], breast["multi_label"]) == (
        "binary-class",
        2,
        False,
    )
    assert medmnist_info("pathmnist")["n_channels"] == 3


def test_multi_label_values_must_be_zero_or_one(tmp_path: Path) -> None:
    path = _write_npz(tmp_path / "m", "chestmnist.npz", image_shape=(28, 28), label_shape=(14,))
    arrays = dict(np.load(path))
    arrays["val_labels"][2, 5] = 3  # one class of sample 2 is neither 0 nor 1
    np.savez(path, **arrays)
    with pytest.raises(DataError, match=r"\[val_labels\]: row 2 has label 3, outside 0\.\.1"):
        _load(flag="chestmnist", split="val", root=tmp_path / "c", mirror=tmp_path / "m")
