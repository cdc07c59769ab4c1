"""Bad data inputs (issue 21) and bad own-data folders (issue 22): one clear line each.

Every case breaks one thing in otherwise good data, runs ``ncaflow prepare`` or
``ncaflow train`` on a tiny run config, and asserts exit code != 0, one line on stderr
naming the file (and key) and what to do, and no folds file or model written.
"""

from __future__ import annotations

import errno
import gzip
import io
import json
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import yaml
from own_folders import (
    classification_run,
    segmentation_run,
    write_classification_folder,
    write_segmentation_folder,
)
from PIL import Image

from ncaflow.data import sources

pytestmark = pytest.mark.filterwarnings("ignore::ncaflow.data.DataWarning")  # synthetic npz
BREAST_MD5 = "750601b1f35ba3300ea97c75c52ff8f6"  # the official breastmnist.npz


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """No mirror from the environment, no network, no retry back-off sleeps."""
    monkeypatch.delenv(sources.MIRROR_ENV, raising=False)

    def offline(*args: object, **kwargs: object) -> None:
        raise urllib.error.URLError("network disabled in tests")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    monkeypatch.setattr(sources.time, "sleep", lambda s: None)


def _good_npz() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", 10), ("val", 4), ("test", 4)):
        arrays[f"{split}_images"] = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        arrays[f"{split}_labels"] = (np.arange(n) % 2).astype(np.uint8)[:, None]
    return arrays


def _save_npz(path: Path, **changes: np.ndarray | None) -> None:
    arrays = {k: v for k, v in {**_good_npz(), **changes}.items() if v is not None}
    np.savez(path, **arrays)


def _truncated(path: Path) -> None:
    _save_npz(path)
    path.write_bytes(path.read_bytes()[:2000])


def _labels(*values: int) -> np.ndarray:
    return np.array(values, dtype=np.int64)[:, None]


NPZ_CASES: dict[str, tuple[Callable[[Path], None], tuple[str, ...]]] = {
    "zero-byte": (lambda p: p.write_bytes(b""), ("the file is empty",)),
    "truncated": (_truncated, ("truncated or damaged",)),
    "no-arrays": (lambda p: _save_npz(p, train_labels=None), ("array is missing", "train_labels")),
    "not-npz": (lambda p: p.write_text("<html>sign in</html>"), ("breastmnist.npz",)),
    "label-too-big": (
        lambda p: _save_npz(p, val_labels=_labels(0, 1, 2, 0)),
        ("[val_labels]: row 2 has label 2, outside 0..1",),
    ),
    "label-negative": (
        lambda p: _save_npz(p, test_labels=_labels(0, -1, 0, 1)),
        ("[test_labels]: row 1 has label -1",),
    ),
}


def _breast_run(tmp_path: Path, mirror: Path) -> Path:
    raw = {
        "task": "classification",
        "model": {"input_channels": 1, "output_channels": 0, "hidden_channels": 4, "head": 2},
        "data": {
            "flag": "breastmnist",
            "readout": "head",
            "root": str(tmp_path / "cache"),
            "mirror": str(mirror),
        },
        "train": {"iterations": 2, "batch_size": 2, "steps": [2], "progress": False},
    }
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.mark.parametrize("case", sorted(NPZ_CASES))
def test_bad_medmnist_npz(cli, tmp_path: Path, case: str) -> None:
    write, needles = NPZ_CASES[case]
    (tmp_path / "m" / "medmnist").mkdir(parents=True)
    mirror_file = tmp_path / "m" / "medmnist" / "breastmnist.npz"
    write(mirror_file)
    run, folds = _breast_run(tmp_path, tmp_path / "m"), tmp_path / "folds.json"
    outcome = cli("prepare", "--config", run, "--out", folds, "--k", "2")
    # names the mirror file to replace and where the official one comes from
    outcome.fails_cleanly(*needles, str(mirror_file), BREAST_MD5, "https://", absent=[folds])


def test_bad_npz_stops_train_before_a_model(cli, tmp_path: Path) -> None:
    (tmp_path / "m" / "medmnist").mkdir(parents=True)
    _truncated(tmp_path / "m" / "medmnist" / "breastmnist.npz")
    out = tmp_path / "model"
    outcome = cli("train", "--config", _breast_run(tmp_path, tmp_path / "m"), "--out", out)
    # the folder this call created is gone again; one that was there stays, as it was
    outcome.fails_cleanly("breastmnist.npz", "truncated or damaged", absent=[out])
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    outcome = cli("train", "--config", _breast_run(tmp_path, tmp_path / "m"), "--out", out)
    outcome.fails_cleanly("breastmnist.npz", absent=[out / "model.json", out / "train.lock"])
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]


def test_mirror_without_the_file_names_path_and_url(cli, tmp_path: Path) -> None:
    (tmp_path / "m").mkdir()
    run, folds = _breast_run(tmp_path, tmp_path / "m"), tmp_path / "folds.json"
    outcome = cli("prepare", "--config", run, "--out", folds)
    expected = str(tmp_path / "m" / "medmnist" / "breastmnist.npz")
    outcome.fails_cleanly(expected, "has no such file", "https://", BREAST_MD5, absent=[folds])


def test_download_with_wrong_checksum_keeps_nothing(
    cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(urllib.request, "urlopen", lambda *a, **k: io.BytesIO(b"not the file"))
    run, folds = _breast_run(tmp_path, tmp_path / "no-mirror"), tmp_path / "folds.json"
    outcome = cli("prepare", "--config", run, "--out", folds)
    outcome.fails_cleanly("wrong checksum", f"expected {BREAST_MD5}", absent=[folds])
    assert not (tmp_path / "cache" / "breastmnist.npz").exists()


def _idx(path: Path, data: np.ndarray, *, cut: int = 0) -> None:
    """Write `data` (uint8) as a gzip IDX file; `cut` > 0 truncates the gzip stream."""
    header = bytes([0, 0, 8, data.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in data.shape)
    blob = gzip.compress(header + data.astype(np.uint8).tobytes())
    path.write_bytes(blob[:-cut] if cut else blob)


MNIST_CASES: dict[str, tuple[int, int, tuple[str, ...]]] = {  # (cut, bad label, needles)
    "truncated-gzip": (40, 3, ("t10k-images-idx3-ubyte.gz is a broken or truncated gzip",)),
    "label-not-a-digit": (0, 12, ("t10k-labels-idx1-ubyte.gz: label 12 at row 5",)),
}


@pytest.mark.parametrize("case", sorted(MNIST_CASES))
def test_bad_mnist_files(cli, tmp_path: Path, case: str) -> None:
    cut, label, needles = MNIST_CASES[case]
    mirror = tmp_path / "m" / "mnist"
    mirror.mkdir(parents=True)
    labels = np.arange(20) % 10
    labels[5] = label
    _idx(mirror / "t10k-images-idx3-ubyte.gz", np.zeros((20, 28, 28), np.uint8), cut=cut)
    _idx(mirror / "t10k-labels-idx1-ubyte.gz", labels)
    raw = {
        "task": "selfclass",
        "model": {
            "input_channels": 1,
            "output_channels": 10,
            "hidden_channels": 4,
            "alive_channel": 0,
        },
        "data": {
            "mirror": str(tmp_path / "m"),
            "root": str(tmp_path / "cache"),
            "test_size": 4,
            "val_size": 4,
        },
        "train": {"iterations": 2, "batch_size": 2, "steps": [2], "progress": False},
    }
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(raw))
    folds = tmp_path / "folds.json"
    outcome = cli("prepare", "--config", tmp_path / "run.yaml", "--out", folds, "--k", "2")
    outcome.fails_cleanly(*needles, f"the mirror file {mirror}", "replace", absent=[folds])


def test_kvasir_zip_that_is_not_a_zip(cli, tmp_path: Path) -> None:
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "kvasir-seg.zip").write_bytes(b"PK\x03\x04 cut short")
    raw = {
        "task": "segmentation",
        "model": {"input_channels": 3, "output_channels": 1, "hidden_channels": 4},
        "data": {"mirror": str(tmp_path / "m"), "root": str(tmp_path / "cache"), "size": 8},
    }
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(raw))
    folds = tmp_path / "folds.json"
    outcome = cli("prepare", "--config", tmp_path / "run.yaml", "--out", folds)
    outcome.fails_cleanly("cannot extract", "kvasir-seg.zip", "https://", absent=[folds])
    assert not (tmp_path / "cache" / "kvasir-seg").exists()  # no half-extracted folder


# -- own folders: segmentation (images + masks) ----------------------------------------


def _jpeg_cut(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:300])  # a truncated JPEG


def _resize_mask(path: Path) -> None:
    Image.open(path).resize((8, 16)).save(path)


SEG_CASES: dict[str, tuple[Callable[[Path], None], tuple[str, ...]]] = {
    "corrupt-jpeg": (lambda r: _jpeg_cut(r / "images" / "s3.jpg"), ("s3.jpg", "not a readable")),
    "corrupt-png-mask": (
        lambda r: (r / "masks" / "s2.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken"),
        ("s2.png", "not a readable image"),
    ),
    "mask-size": (
        lambda r: _resize_mask(r / "masks" / "s1.png"),
        ("s1.png is 8x16 but its image", "s1.jpg is 16x16", "re-export"),
    ),
    "missing-mask": (lambda r: (r / "masks" / "s4.png").unlink(), ("s4.jpg has no mask",)),
    "mask-without-image": (lambda r: (r / "images" / "s5.jpg").unlink(), ("s5.png has no image",)),
    "empty-images": (
        lambda r: [p.unlink() for p in (r / "images").iterdir()],
        ("data.images: no images", "images"),
    ),
    "no-mask-folder": (
        lambda r: [*(p.unlink() for p in (r / "masks").iterdir()), (r / "masks").rmdir()],
        ("data.masks:", "masks does not exist"),
    ),
    "same-stem-twice": (
        lambda r: Image.new("RGB", (16, 16)).save(r / "images" / "s0.png"),
        ("s0.jpg and s0.png", "share the stem"),
    ),
}


@pytest.mark.parametrize("case", sorted(SEG_CASES))
def test_bad_segmentation_folder(cli, tmp_path: Path, case: str) -> None:
    breaks, needles = SEG_CASES[case]
    folder = write_segmentation_folder(tmp_path / "own", n=8)
    breaks(folder)
    run, folds = segmentation_run(tmp_path / "run.yaml", folder), tmp_path / "folds.json"
    cli("prepare", "--config", run, "--out", folds).fails_cleanly(*needles, absent=[folds])


def test_kvasir_mask_of_another_size_fails(cli, tmp_path: Path) -> None:
    """Decision: a Kvasir-SEG mask whose size differs from its image is an error."""
    root = tmp_path / "m" / "kvasir-seg"
    write_segmentation_folder(root, n=4)
    _resize_mask(root / "masks" / "s2.png")
    raw = {
        "task": "segmentation",
        "model": {"input_channels": 3, "output_channels": 1, "hidden_channels": 4},
        "data": {"mirror": str(tmp_path / "m"), "root": str(tmp_path / "cache"), "size": 8},
        "train": {"iterations": 2, "batch_size": 2, "steps": [2], "progress": False},
    }
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(raw))
    out = tmp_path / "model"
    outcome = cli("train", "--config", tmp_path / "run.yaml", "--out", out)
    outcome.fails_cleanly("s2.png is 8x16 but its image", absent=[out / "model.json"])


# -- own folders: classification (images + labels CSV) ---------------------------------


def _csv_edit(old: str, new: str) -> Callable[[Path], None]:
    def edit(root: Path) -> None:
        csv = root / "labels.csv"
        csv.write_text(csv.read_text().replace(old, new))

    return edit


CLS_CASES: dict[str, tuple[Callable[[Path], None], tuple[str, ...]]] = {
    "csv-lists-missing-file": (
        _csv_edit("im03.png", "im99.png"),
        ("labels.csv line 5 (data.labels): im99.png is not an image in",),
    ),
    "image-without-label": (
        _csv_edit("im05.png,dark\n", ""),
        ("im05.png has no label in", "labels.csv", "add a line im05.png,<label>"),
    ),
    "empty-label": (_csv_edit("im02.png,bright", "im02.png,"), ("line 4", "im02.png has no label")),
    "no-header": (
        _csv_edit("file,label\n", ""),
        ("labels.csv (data.labels): the first line must name the columns file,label",),
    ),
    "no-csv": (lambda r: (r / "labels.csv").unlink(), ("data.labels: no labels file",)),
    "one-class": (_csv_edit("dark", "bright"), ("one class only", "'bright'")),
    "unreadable-image": (
        lambda r: (r / "images" / "im01.png").write_bytes(b"GIF89a nonsense"),
        ("im01.png is not a readable image",),
    ),
    "empty-folder": (
        lambda r: [p.unlink() for p in (r / "images").iterdir()],
        ("data.images: no images", "put your images there"),
    ),
}


@pytest.mark.parametrize("case", sorted(CLS_CASES))
def test_bad_classification_folder(cli, tmp_path: Path, case: str) -> None:
    breaks, needles = CLS_CASES[case]
    folder = write_classification_folder(tmp_path / "own", n=8)
    breaks(folder)
    run, folds = classification_run(tmp_path / "run.yaml", folder), tmp_path / "folds.json"
    cli("prepare", "--config", run, "--out", folds).fails_cleanly(*needles, absent=[folds])


def test_model_channels_that_do_not_fit_the_images(cli, tmp_path: Path) -> None:
    folder = write_classification_folder(tmp_path / "own", n=8, rgb=True)
    run, out = classification_run(tmp_path / "run.yaml", folder), tmp_path / "model"
    outcome = cli("train", "--config", run, "--out", out)
    needles = ("key 'model.input_channels': 1 contradicts the images", "set it to 3")
    outcome.fails_cleanly(*needles, "or data.channels: 1 as grey")
    assert not (out / "model.json").exists()


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        ({"dataset": "medmnist"}, "key 'data.images': is read only with data.dataset: folder"),
        ({"test_images": "t"}, "key 'data.test_labels': give data.test_images and"),
    ],
)
def test_folder_keys_that_do_not_go_together(
    cli, tmp_path: Path, data: dict[str, str], needle: str
) -> None:
    folder = write_classification_folder(tmp_path / "own", n=4)
    run, folds = classification_run(tmp_path / "run.yaml", folder, **data), tmp_path / "f.json"
    cli("prepare", "--config", run, "--out", folds).fails_cleanly(
        needle, "run.yaml", absent=[folds]
    )


def test_folds_of_changed_images_are_refused(cli, tmp_path: Path) -> None:
    folder = write_classification_folder(tmp_path / "own", n=10)
    run, folds = classification_run(tmp_path / "run.yaml", folder), tmp_path / "folds.json"
    assert cli("prepare", "--config", run, "--out", folds, "--k", "2").code == 0
    for image in (folder / "images").iterdir():  # the data changed after prepare
        Image.new("L", (10, 10), 255).save(image)
    out = tmp_path / "model"
    outcome = cli("train", "--config", run, "--out", out, "--folds", folds, "--fold", "0")
    outcome.fails_cleanly(str(folds), "re-run prepare", absent=[out / "model.json"])


# -- issue 26: silently wrong inputs are scaled by their type, or refused -------------------


def _floats(value: float) -> np.ndarray:
    images = np.zeros((10, 28, 28), np.float32)
    images[2, 3, 4] = value
    return images


NPZ_CASES.update(
    {
        "float-labels": (
            lambda p: _save_npz(p, val_labels=np.array([[0.5], [1.5], [0.0], [1.0]])),
            ("[val_labels]: row 0 has label [0.5], not a whole number",),
        ),
        "nan-pixels": (
            lambda p: _save_npz(p, train_images=_floats(np.nan)),
            ("[train_images]: NaN or Inf pixel values",),
        ),
        "float-pixels-above-one": (
            lambda p: _save_npz(p, train_images=_floats(255.0)),
            ("[train_images]: float pixels outside [0, 1]",),
        ),
        "negative-int-pixels": (
            lambda p: _save_npz(p, train_images=_floats(-3).astype(np.int16)),
            ("[train_images]: negative pixel values (-3)",),
        ),
    }
)


def test_uint16_images_are_scaled_by_their_range(tmp_path: Path) -> None:
    """An npz of uint16 images is divided by 65535, not by 255 (inputs reached 257)."""
    from ncaflow.data.medmnist import load_medmnist

    (tmp_path / "m" / "medmnist").mkdir(parents=True)
    wide = (np.arange(10 * 28 * 28) % 65536).astype(np.uint16).reshape(10, 28, 28)
    _save_npz(tmp_path / "m" / "medmnist" / "breastmnist.npz", train_images=wide)
    images, _ = load_medmnist(
        flag="breastmnist", split="train", cache_dir=tmp_path / "cache", mirror=tmp_path / "m"
    )
    assert images.max() <= 1.0 and images.max() > 0.1
    np.testing.assert_allclose(images[0, 0, 0, 1], 1 / 65535, rtol=1e-6)


def _red_mask(root: Path) -> None:
    mask = np.zeros((16, 16, 3), np.uint8)
    mask[4:10, 4:10, 0] = 255  # a red square: foreground or not? (it read as background)
    Image.fromarray(mask).save(root / "masks" / "s2.png")


def _nan_tiff(root: Path) -> None:
    (root / "images" / "s3.jpg").unlink()
    pixels = np.full((16, 16), 0.5, np.float32)
    pixels[1, 1] = np.nan
    Image.fromarray(pixels, mode="F").save(root / "images" / "s3.tif")


SEG_CASES.update(
    {
        "red-rgb-mask": (_red_mask, ("s2.png (data.masks)", "coloured (255, 0, 0)", "black")),
        "nan-float-tiff": (_nan_tiff, ("s3.tif", "NaN or Inf pixel values")),
    }
)


def test_an_empty_validation_split_names_its_key(cli, tmp_path: Path) -> None:
    """A folds file whose fold has no val samples: one line naming data.folds and the fix
    (it was "torch.cat(): expected a non-empty list")."""
    folder = write_classification_folder(tmp_path / "own", n=8)
    run, out = classification_run(tmp_path / "run.yaml", folder), tmp_path / "model"
    folds = tmp_path / "folds.json"
    assert cli("prepare", "--config", run, "--out", folds, "--k", "2").code == 0
    doc = json.loads(folds.read_text())
    doc["folds"][0]["val"] = []
    folds.write_text(json.dumps(doc))
    outcome = cli("train", "--config", run, "--out", out, "--folds", folds, "--fold", "0")
    outcome.fails_cleanly(
        "key 'data.folds'", "empty val split", "ncaflow prepare", absent=[out / "model.json"]
    )


def test_a_one_image_validation_split_is_evaluated(cli, tmp_path: Path) -> None:
    """Five images give a val split of one (medmnist's metrics squeezed it to a scalar and
    scikit-learn raised a TypeError traceback)."""
    folder = write_classification_folder(tmp_path / "own", n=5)
    run, out = classification_run(tmp_path / "run.yaml", folder), tmp_path / "model"
    outcome = cli("train", "--config", run, "--out", out)
    assert outcome.code == 0, outcome.err
    assert (out / "model.json").is_file()


def test_a_full_disk_under_data_root_says_where_not_out(
    cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "m" / "medmnist").mkdir(parents=True)
    _save_npz(tmp_path / "m" / "medmnist" / "breastmnist.npz")

    def full(src: object, dst: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(sources.os, "replace", full)
    run, folds = _breast_run(tmp_path, tmp_path / "m"), tmp_path / "folds.json"
    outcome = cli("prepare", "--config", run, "--out", folds)
    cached = tmp_path / "cache" / "breastmnist.npz"
    outcome.fails_cleanly(f"disk full while writing {cached}", "--set data.root=DIR",
                          absent=[folds])  # fmt: skip
    assert "--out" not in outcome.err
