from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ncaflow.data import (
    DataError,
    array_checksum,
    fold_indices,
    make_folds,
    read_folds,
    write_folds,
)

LABELS = np.repeat(np.arange(3), [50, 30, 17])  # N = 97, unbalanced


def _check_partition(folds: dict, n: int) -> None:
    vals = [set(f["val"]) for f in folds["folds"]]
    for f in folds["folds"]:
        assert not set(f["train"]) & set(f["val"])
        assert set(f["train"]) | set(f["val"]) == set(range(n))
    if folds["k"] > 1:
        assert sum(len(v) for v in vals) == n and set().union(*vals) == set(range(n))


def test_stratified_k_fold() -> None:
    folds = make_folds(LABELS, k=5, seed=3, checksum="abc")
    assert {k: folds[k] for k in ("version", "k", "seed", "checksum", "n")} == {
        "version": 1, "k": 5, "seed": 3, "checksum": "abc", "n": 97,
    }  # fmt: skip
    _check_partition(folds, 97)
    for f in folds["folds"]:
        counts = np.bincount(LABELS[f["val"]], minlength=3)
        assert np.all(np.abs(counts - np.bincount(LABELS) / 5) <= 1)


def test_deterministic_and_seeded() -> None:
    a = make_folds(LABELS, k=4, seed=0, checksum="x")
    assert a == make_folds(LABELS, k=4, seed=0, checksum="x")
    assert a["folds"] != make_folds(LABELS, k=4, seed=1, checksum="x")["folds"]


def test_single_split() -> None:
    folds = make_folds(LABELS, k=1, seed=0, checksum="x", val_fraction=0.25)
    assert len(folds["folds"]) == 1
    _train, val = fold_indices(folds, 0)
    _check_partition(folds, 97)
    assert len(val) == 25
    counts = np.bincount(LABELS[val], minlength=3)
    assert np.all(np.abs(counts - np.bincount(LABELS) * 0.25) <= 1)
    assert len(make_folds(LABELS, k=1, seed=0, checksum="x")["folds"][0]["val"]) == 20


def test_unlabelled_and_column_labels() -> None:
    folds = make_folds(None, n=10, k=5, seed=0, checksum="x")
    _check_partition(folds, 10)
    assert [len(f["val"]) for f in folds["folds"]] == [2] * 5
    col = make_folds(LABELS[:, None], k=5, seed=3, checksum="abc")
    assert col == make_folds(LABELS, k=5, seed=3, checksum="abc")
    with pytest.raises(DataError, match="labels or n"):
        make_folds(None, k=2, seed=0, checksum="x")


def test_multi_label_and_rare_classes() -> None:
    rng = np.random.default_rng(0)
    multi = (rng.random((60, 14)) < 0.1).astype(np.int64)
    _check_partition(make_folds(multi, k=3, seed=0, checksum="x"), 60)
    rare = np.array([0] * 20 + [1] * 20 + [2])  # one sample of class 2
    _check_partition(make_folds(rare, k=4, seed=0, checksum="x"), 41)
    _check_partition(make_folds(rare, k=1, seed=0, checksum="x"), 41)


def test_write_read_and_checksum(tmp_path: Path) -> None:
    checksum = array_checksum(LABELS)
    folds = make_folds(LABELS, k=3, seed=0, checksum=checksum)
    path = tmp_path / "prepared" / "folds.json"
    write_folds(path, folds)
    assert [p.name for p in path.parent.iterdir()] == ["folds.json"]
    assert read_folds(path, checksum=checksum) == folds
    other = array_checksum(LABELS[:-1])
    with pytest.raises(DataError, match=f"made for data with checksum {checksum}.*{other}"):
        read_folds(path, checksum=other)
    with pytest.raises(DataError, match="prepare"):
        read_folds(tmp_path / "missing.json")


def test_fold_indices_range() -> None:
    folds = make_folds(LABELS, k=3, seed=0, checksum="x")
    train, val = fold_indices(folds, 2)
    assert train.dtype == np.int64 and len(train) + len(val) == 97
    with pytest.raises(DataError, match=r"valid folds are 0\.\.2"):
        fold_indices(folds, 3)


def test_array_checksum() -> None:
    a = np.arange(12, dtype=np.int64)
    assert array_checksum(a) == array_checksum(a.copy()) and len(array_checksum(a)) == 16
    assert array_checksum(a) != array_checksum(a.reshape(3, 4))
    assert array_checksum(a, a) != array_checksum(a)


def test_bad_k() -> None:
    with pytest.raises(DataError, match="k=0"):
        make_folds(LABELS, k=0, seed=0, checksum="x")
    with pytest.raises(DataError, match="val_fraction"):
        make_folds(LABELS, k=1, seed=0, checksum="x", val_fraction=1.5)


def test_written_folds_get_the_usual_mode(tmp_path: Path, umask_022: None) -> None:
    from ncaflow.data import write_folds

    path = tmp_path / "prepared" / "folds.json"
    write_folds(path, {"k": 1, "folds": []})
    assert path.stat().st_mode & 0o777 == 0o644
    assert [p.name for p in path.parent.iterdir()] == ["folds.json"]  # no temp file left
