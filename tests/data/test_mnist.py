from __future__ import annotations

import gzip
import struct
import warnings
from pathlib import Path

import numpy as np
import pytest

from ncaflow.data import DataError, DataWarning, load_digits, load_mnist, read_idx

_CODES = {np.dtype("u1"): 0x08, np.dtype("i4"): 0x0C, np.dtype("f8"): 0x0E}


def _write_idx(path: Path, array: np.ndarray, *, compress: bool) -> None:
    header = struct.pack(">BBBB", 0, 0, _CODES[array.dtype], array.ndim)
    header += struct.pack(f">{array.ndim}I", *array.shape)
    raw = header + array.astype(array.dtype.newbyteorder(">")).tobytes()
    path.write_bytes(gzip.compress(raw) if compress else raw)


@pytest.mark.parametrize("compress", [False, True])
@pytest.mark.parametrize(
    "array",
    [
        np.arange(2 * 5 * 3, dtype=np.uint8).reshape(2, 5, 3),
        np.array([-3, 0, 70000], dtype=np.int32),
        np.linspace(-1, 1, 12).reshape(3, 4),
    ],
)
def test_idx_round_trip(tmp_path: Path, array: np.ndarray, compress: bool) -> None:
    _write_idx(tmp_path / "a.idx", array, compress=compress)
    back = read_idx(tmp_path / "a.idx")
    assert back.shape == array.shape and back.dtype == array.dtype
    np.testing.assert_array_equal(back, array)


def test_truncated_idx_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "short-idx3-ubyte"
    _write_idx(path, np.zeros((4, 28, 28), np.uint8), compress=False)
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(DataError, match="truncated") as info:
        read_idx(path)
    assert str(path) in str(info.value)


def test_truncated_gzip_and_bad_magic(tmp_path: Path) -> None:
    gz = tmp_path / "x.gz"
    gz.write_bytes(gzip.compress(b"\x00\x00\x08\x01" + b"\x00" * 400)[:30])
    with pytest.raises(DataError, match=r"x\.gz"):
        read_idx(gz)
    bad = tmp_path / "x.bin"
    bad.write_bytes(b"PK\x03\x04rest")
    with pytest.raises(DataError, match="bad magic"):
        read_idx(bad)


def test_load_mnist_from_shared_mirror(shared_mirror: Path, tmp_path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)  # the shared copies differ on purpose
        images, labels = load_mnist(split="test", root=tmp_path, mirror=shared_mirror)
    assert images.shape == (10000, 28, 28) and images.dtype == np.uint8
    assert labels.shape == (10000,) and labels.dtype == np.int64
    assert set(np.unique(labels)) == set(range(10))
    assert images.max() == 255 and images.min() == 0


def test_load_mnist_bad_split(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="split"):
        load_mnist(split="val", root=tmp_path)  # type: ignore[arg-type]


def test_load_digits() -> None:
    images, labels = load_digits()
    assert images.shape == (1797, 8, 8) and images.dtype == np.uint8
    assert images.max() == 255 and labels.dtype == np.int64
    assert set(np.unique(labels)) == set(range(10))
