from __future__ import annotations

import io
import urllib.request
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ncaflow.data import DataError, DataWarning, load_emoji


def test_lizard_from_mirror(shared_mirror: Path, tmp_path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the shared emoji are the official files
        x = load_emoji("1f98e", root=tmp_path, mirror=shared_mirror)
    assert x.shape == (4, 72, 72) and x.dtype == torch.float32
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
    assert bool((x[:3] <= x[3:] + 1e-6).all())  # premultiplied
    alpha = x[3]
    assert float(alpha.min()) == 0.0 and float(alpha.max()) > 0.99
    assert float(alpha[:16].abs().sum()) == 0.0  # the padding is empty
    for spelling in ("u1f98e", "emoji_u1f98e", "U1F98E"):
        y = load_emoji(spelling, root=tmp_path, mirror=shared_mirror)
        assert torch.equal(x, y)


def _png(path: Path, w: int, h: int) -> Path:
    rgba = np.zeros((h, w, 4), np.uint8)
    rgba[..., 0] = 255
    rgba[h // 4 : 3 * h // 4, w // 4 : 3 * w // 4, 3] = 128
    Image.fromarray(rgba, "RGBA").save(path)
    return path


def test_local_non_square_png(tmp_path: Path) -> None:
    x = load_emoji(str(_png(tmp_path / "wide.png", 100, 50)), size=20, pad=2, root=tmp_path)
    assert x.shape == (4, 24, 24)
    assert float(x[3, :7].sum()) == 0.0  # 20x10 image centred vertically in 20x20
    assert abs(float(x[0].max()) - float(x[3].max())) < 1e-6  # red == alpha when premultiplied


def test_url_target_goes_through_fetch(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    buf = io.BytesIO()
    Image.fromarray(np.full((8, 8, 4), 255, np.uint8), "RGBA").save(buf, format="PNG")
    monkeypatch.setattr(urllib.request, "urlopen", lambda req, timeout: io.BytesIO(buf.getvalue()))
    with pytest.warns(DataWarning):
        x = load_emoji("https://example.invalid/e/x.png", size=8, pad=0, root=tmp_path)
    assert x.shape == (4, 8, 8) and float(x.min()) == 1.0
    assert (tmp_path / "x.png").is_file()


def test_bad_target(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not an existing file"):
        load_emoji("lizard!", root=tmp_path)
