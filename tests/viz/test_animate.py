"""Animations: one GIF frame per kept step."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import run_config
from PIL import Image

from ncaflow.model.cascade import build_model
from ncaflow.tasks import get_task
from ncaflow.viz.animate import animate

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


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
