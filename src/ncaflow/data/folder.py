"""Your own data without code (``data.dataset: folder``, see config/OWN_DATA.md).

Segmentation: a folder of images and a folder of masks, paired by file stem.
Classification: a folder of images and a CSV with the columns ``file,label``; the label
strings become class indices in sorted order (numeric order when every label is an
integer), and that mapping is stored with the model.

The test split is a second folder (``data.test_images`` + ``data.test_masks`` or
``data.test_labels``) or else a held-out ``data.test_fraction`` of the images; train/val
come from the rest (or from a folds file over the rest, written by ``ncaflow prepare``).
"""

from __future__ import annotations

import csv
import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ncaflow.data.images import image_array, image_channels, image_files, open_image, read_pairs
from ncaflow.data.sources import DataError

__all__ = [
    "OwnImages",
    "check_folder_keys",
    "class_names",
    "derived_keys",
    "holdout_split",
    "load_own_classification",
    "load_own_segmentation",
    "read_labels",
]


@dataclass(kw_only=True)
class OwnImages:
    """The user's images, loaded.

    images:  float32 (N, C, H, W) in [0, 1], training pool first, then the test folder
    targets: int64 (N,) class indices (classification) or float32 (N, 1, H, W) masks
    parts:   {"train", "val", "test"} -> sorted index arrays into images/targets
    names:   class index -> label string (classification; empty for segmentation)
    """

    images: np.ndarray
    targets: np.ndarray
    parts: dict[str, np.ndarray]
    names: list[str] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)

    @property
    def channels(self) -> int:
        return int(self.images.shape[1])

    def info(self) -> dict[str, Any]:
        """medmnist_info's keys that the classification task needs."""
        return {
            "task": "binary-class" if len(self.names) == 2 else "multi-class",
            "label": {str(i): name for i, name in enumerate(self.names)},
            "n_channels": self.channels,
        }


def holdout_split(
    n: int,
    *,
    labels: np.ndarray | None,
    test_fraction: float,
    val_fraction: float,
    seed: int,
) -> dict[str, np.ndarray]:
    """Train/val/test indices of n samples, stratified by `labels` if given.

    Every class (or the whole set, without labels) of at least 3 samples gives at least one
    sample to val and, with ``test_fraction > 0``, to test.
    """
    rng = np.random.default_rng(seed)
    groups = (
        [np.arange(n)]
        if labels is None
        else [np.flatnonzero(labels == c) for c in np.unique(labels)]
    )
    parts: dict[str, list[np.ndarray]] = {"train": [], "val": [], "test": []}
    for group in groups:
        perm = rng.permutation(group)
        m = len(perm)
        n_test = max(1, round(m * test_fraction)) if m >= 3 and test_fraction > 0 else 0
        n_val = max(1, round(m * val_fraction)) if m >= 3 else 0
        parts["test"].append(perm[:n_test])
        parts["val"].append(perm[n_test : n_test + n_val])
        parts["train"].append(perm[n_test + n_val :])
    out = {k: np.sort(np.concatenate(v)).astype(np.int64) for k, v in parts.items()}
    empty = [
        k for k in ("train", "val") + (("test",) if test_fraction > 0 else ()) if not len(out[k])
    ]
    if empty:
        raise DataError(
            f"{n} images are too few for a {empty[0]} split (each class needs at least 3 "
            "images); add images, or give a test folder with data.test_images"
        )
    return out


def read_labels(path: str | Path, *, key: str) -> list[tuple[str, str, int]]:
    """The ``(file, label, line number)`` rows of a labels CSV (header ``file,label``)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise DataError(
            f"{key}: no labels file {path}; write a CSV with columns file,label"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{key}: cannot read {path} as UTF-8 text ({exc})") from exc
    reader = csv.DictReader(text.splitlines())
    columns = [c.strip() for c in reader.fieldnames or []]
    if "file" not in columns or "label" not in columns:
        raise DataError(
            f"{path} ({key}): the first line must name the columns file,label; it is "
            f"{','.join(columns) or 'empty'}"
        )
    rows = []
    for row in reader:
        clean = {(k or "").strip(): (v or "").strip() for k, v in row.items() if isinstance(v, str)}
        file, label = clean.get("file", ""), clean.get("label", "")
        if not file and not label:
            continue  # a blank line
        line = reader.line_num
        if not file:
            raise DataError(f"{path} line {line} ({key}): label {label!r} has no file name")
        if not label:
            raise DataError(f"{path} line {line} ({key}): {file} has no label; add one")
        rows.append((file, label, line))
    if not rows:
        raise DataError(f"{path} ({key}) lists no images; add lines file,label")
    return rows


def class_names(labels: list[str]) -> list[str]:
    """Distinct labels in class-index order: numeric if every label is an integer, else sorted."""
    distinct = set(labels)
    try:
        return sorted(distinct, key=int)
    except ValueError:
        return sorted(distinct)


def _classes(labels: str, strings: list[str]) -> list[str]:
    """class_names, refusing a labels CSV of one class."""
    names = class_names(strings)
    if len(names) < 2:
        raise DataError(
            f"{labels} (data.labels) has one class only ({names[0]!r}); a classifier needs two"
        )
    return names


def _labelled(
    images: str | Path,
    labels: str | Path,
    *,
    keys: tuple[str, str],
) -> tuple[list[Path], list[str]]:
    """Image paths and their label strings; every image labelled once, every row an image."""
    folder = Path(images)
    files = image_files(folder, key=keys[0], recursive=True)
    on_disk = {p.relative_to(folder).as_posix(): p for p in files}
    table: dict[str, tuple[str, int]] = {}
    for file, label, line in read_labels(labels, key=keys[1]):
        name = Path(file).as_posix()
        if name not in on_disk:
            raise DataError(
                f"{labels} line {line} ({keys[1]}): {file} is not an image in {folder} "
                f"({keys[0]}); fix the name or add the image"
            )
        if name in table and table[name][0] != label:
            raise DataError(
                f"{labels} line {line} ({keys[1]}): {file} is labelled {label!r} here and "
                f"{table[name][0]!r} on line {table[name][1]}; keep one"
            )
        table[name] = (label, line)
    for name, path in on_disk.items():
        if name not in table:
            raise DataError(
                f"{path} has no label in {labels} ({keys[1]}); add a line {name},<label> "
                "or move the image out of the folder"
            )
    names = sorted(table)
    return [on_disk[n] for n in names], [table[n][0] for n in names]


def _size(size: int | list[int]) -> tuple[int, int]:
    return (size, size) if isinstance(size, int) else (size[0], size[-1])


def load_own_classification(
    *,
    images: str,
    labels: str,
    test_images: str | None = None,
    test_labels: str | None = None,
    size: int | list[int],
    channels: int | None = None,
    test_fraction: float = 0.2,
    val_fraction: float = 0.2,
    seed: int = 0,
) -> OwnImages:
    """Images + labels CSV (and an optional test folder) -> `OwnImages` with names set."""
    files, strings = _labelled(images, labels, keys=("data.images", "data.labels"))
    names = _classes(labels, strings)
    n_pool = len(files)
    if test_images is not None and test_labels is not None:
        test_files, test_strings = _labelled(
            test_images, test_labels, keys=("data.test_images", "data.test_labels")
        )
        unknown = sorted(set(test_strings) - set(names))
        if unknown:
            raise DataError(
                f"{test_labels} (data.test_labels) has label {unknown[0]!r}, which the "
                f"training labels in {labels} do not have ({', '.join(names)})"
            )
        files, strings = files + test_files, strings + test_strings
    index = {name: i for i, name in enumerate(names)}
    y = np.array([index[s] for s in strings], dtype=np.int64)
    c = channels or image_channels(files)
    hw = _size(size)
    x = np.stack([image_array(open_image(p), channels=c, size=hw) for p in files])
    parts = _parts(n_pool, len(files), y[:n_pool], test_fraction, val_fraction, seed)
    return OwnImages(images=x, targets=y, parts=parts, names=names, ids=[str(p) for p in files])


def load_own_segmentation(
    *,
    images: str,
    masks: str,
    test_images: str | None = None,
    test_masks: str | None = None,
    size: int | list[int],
    channels: int | None = None,
    test_fraction: float = 0.2,
    val_fraction: float = 0.2,
    seed: int = 0,
) -> OwnImages:
    """Image and mask folders (and an optional test pair of folders) -> `OwnImages`."""
    hw = _size(size)
    x, m, ids = read_pairs(images, masks, size=hw, channels=channels)
    n_pool = len(ids)
    if test_images is not None and test_masks is not None:
        keys = ("data.test_images", "data.test_masks")
        tx, tm, tids = read_pairs(test_images, test_masks, size=hw, channels=x.shape[1], keys=keys)
        x, m, ids = np.concatenate([x, tx]), np.concatenate([m, tm]), ids + tids
    parts = _parts(n_pool, len(ids), None, test_fraction, val_fraction, seed)
    return OwnImages(images=x, targets=m, parts=parts, ids=ids)


def _parts(
    n_pool: int,
    n: int,
    labels: np.ndarray | None,
    test_fraction: float,
    val_fraction: float,
    seed: int,
) -> dict[str, np.ndarray]:
    """Splits over the pool; samples from n_pool on (a test folder) are the test split."""
    own_test = n > n_pool
    parts = holdout_split(
        n_pool,
        labels=labels,
        test_fraction=0.0 if own_test else test_fraction,
        val_fraction=val_fraction,
        seed=seed,
    )
    if own_test:
        parts["test"] = np.arange(n_pool, n, dtype=np.int64)
    return parts


def derived_keys(data: dict[str, Any], *, classes: str | None) -> dict[str, tuple[int, str]]:
    """The model keys your own data decides, each with what decided it (for errors).

    ``model.input_channels``: ``data.channels``, else 1 if every training image is grey,
    else 3 (image headers only); and with ``classes`` (``"model.head"`` or
    ``"model.output_channels"``) the number of distinct labels in ``data.labels``.
    Raises DataError naming the key and file when a folder or the CSV cannot be read.
    """
    images, out = data.get("images"), {}
    channels = data.get("channels")
    if isinstance(channels, int) and not isinstance(channels, bool):
        out["model.input_channels"] = (channels, f"data.channels: {channels}")
    elif isinstance(images, str):
        grey = _grey_or_colour(images, recursive=classes is not None)
        what = "grey: 1 channel" if grey == 1 else "colour: 3 channels"
        other = "data.channels: 3 reads them as RGB" if grey == 1 else "data.channels: 1 as grey"
        other = f"or {other}"
        out["model.input_channels"] = (grey, f"the images in {images} ({what}; {other})")
    labels = data.get("labels")
    if classes is not None and isinstance(labels, str):
        names = _classes(labels, [label for _, label, _ in read_labels(labels, key="data.labels")])
        out[classes] = (len(names), f"the {len(names)} labels in {labels}")
    return out


def _grey_or_colour(folder: str, *, recursive: bool) -> int:
    """image_channels of a folder's images, remembered per folder state: the workflow asks
    once per grid cell."""
    path = Path(folder)
    stamp = path.stat().st_mtime_ns if path.is_dir() else 0
    return _channels_cached(folder, str(path.resolve()), recursive, stamp)


@functools.lru_cache(maxsize=64)
def _channels_cached(folder: str, resolved: str, recursive: bool, stamp: int) -> int:
    return image_channels(image_files(folder, key="data.images", recursive=recursive))


def check_folder_keys(data: Any, *, targets: str, default: str) -> None:
    """Validate a task's ``data.dataset``/``images``/``<targets>``/``test_*`` keys.

    `data` is the task's data dataclass; `targets` is ``"masks"`` or ``"labels"``;
    `default` names the built-in dataset. Raises ConfigError naming the key.
    """
    from ncaflow.config import check

    folder = data.dataset == "folder"
    given = {
        k: getattr(data, k) is not None
        for k in ("images", targets, "test_images", f"test_{targets}")
    }
    if folder:
        for k in ("images", targets):
            check(
                given[k],
                f"data.{k}",
                f"data.dataset: folder needs data.{k} (see config/OWN_DATA.md)",
            )
        check(
            given["test_images"] == given[f"test_{targets}"],
            f"data.test_{targets}" if given["test_images"] else "data.test_images",
            f"give data.test_images and data.test_{targets} together (or neither: a held-out "
            "data.test_fraction is the test split)",
        )
    else:
        for k, is_set in given.items():
            check(not is_set, f"data.{k}", f"is read only with data.dataset: folder, not {default}")
    check(
        data.channels in (None, 1, 3, 4),
        "data.channels",
        "must be 1, 3 or 4 (or null: from the images)",
    )
    size = data.size if isinstance(data.size, list) else [data.size]
    check(len(size) in (1, 2) and min(size) >= 1, "data.size", "give N or [H, W], each >= 1")
    test, val = data.test_fraction, data.val_fraction
    check(
        0.0 <= test < 1.0, "data.test_fraction", f"{test!r} is not allowed; give a number in [0, 1)"
    )
    check(0.0 < val < 1.0, "data.val_fraction", f"{val!r} is not allowed; give a number in (0, 1)")
    check(
        data.test_fraction + data.val_fraction < 1.0,
        "data.val_fraction",
        "with data.test_fraction must leave images to train on (sum < 1)",
    )
