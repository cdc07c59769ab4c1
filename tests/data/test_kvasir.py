from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ncaflow.data import DataError, DataWarning, load_kvasir


def test_shared_pairs(shared_mirror: Path, tmp_path: Path) -> None:
    images, masks, ids = load_kvasir(size=32, root=tmp_path, mirror=shared_mirror)
    assert images.shape == (5, 3, 32, 32) and images.dtype == torch.float32
    assert masks.shape == (5, 1, 32, 32) and masks.dtype == torch.float32
    assert float(images.min()) >= 0.0 and float(images.max()) <= 1.0
    assert set(masks.unique().tolist()) == {0.0, 1.0}
    assert 0.02 < float(masks.mean()) < 0.8
    assert ids == sorted(ids) and len(set(ids)) == 5
    assert list(tmp_path.iterdir()) == []  # read straight from the mirror


def _jpeg(rgb: bool, w: int = 40, h: int = 30) -> bytes:
    arr = np.zeros((h, w, 3) if rgb else (h, w), np.uint8)
    arr[h // 3 : 2 * h // 3, w // 3 : 2 * w // 3] = 255
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG")
    return buf.getvalue()


def test_missing_mask_names_the_file(tmp_path: Path) -> None:
    root = tmp_path / "m" / "kvasir-seg"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    (root / "images" / "a.jpg").write_bytes(_jpeg(True))
    with pytest.raises(DataError, match=r"a\.jpg has no mask"):
        load_kvasir(root=tmp_path / "c", mirror=tmp_path / "m")


def test_zip_is_extracted_once_into_the_cache(tmp_path: Path) -> None:
    (tmp_path / "m").mkdir()
    with zipfile.ZipFile(tmp_path / "m" / "kvasir-seg.zip", "w") as zf:
        for name in ("b", "a"):
            zf.writestr(f"Kvasir-SEG/images/{name}.jpg", _jpeg(True))
            zf.writestr(f"Kvasir-SEG/masks/{name}.jpg", _jpeg(False))
    cache = tmp_path / "c"
    with pytest.warns(DataWarning):  # no official md5 is known for the zip
        images, masks, ids = load_kvasir(size=12, root=cache, mirror=tmp_path / "m")
    assert ids == ["a", "b"] and images.shape == (2, 3, 12, 12)
    assert 0.0 < float(masks.mean()) < 0.5
    assert sorted(p.name for p in cache.iterdir()) == [
        "kvasir-seg",
        "kvasir-seg.zip",
        "kvasir-seg.zip.md5",
    ]
    (tmp_path / "m" / "kvasir-seg.zip").unlink()
    again = load_kvasir(size=12, root=cache)  # no mirror, no network: the extracted folder
    assert again[2] == ids and torch.equal(again[1], masks)


@pytest.mark.parametrize("top", ["Kvasir-SEG/", ""])
def test_the_extracted_folder_is_0755_under_umask_022(
    tmp_path: Path, umask_022: None, top: str
) -> None:
    """The cache folder is readable by others however the zip is laid out (images/ at its
    top: the extraction's own temporary folder, which mkdtemp made 0700, becomes the cache)."""
    (tmp_path / "m").mkdir()
    with zipfile.ZipFile(tmp_path / "m" / "kvasir-seg.zip", "w") as zf:
        zf.writestr(f"{top}images/a.jpg", _jpeg(True))
        zf.writestr(f"{top}masks/a.jpg", _jpeg(False))
    cache = tmp_path / "c"
    with pytest.warns(DataWarning):
        load_kvasir(size=12, root=cache, mirror=tmp_path / "m")
    folder = cache / "kvasir-seg"
    assert folder.stat().st_mode & 0o777 == 0o755
    assert (folder / "images" / "a.jpg").stat().st_mode & 0o777 == 0o644
    assert [p.name for p in cache.iterdir() if p.name.startswith(".")] == []
