"""Animations: one GIF frame per kept step."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from ncaflow.config import RunConfig, from_dict
from ncaflow.model.cascade import build_model
from ncaflow.tasks import get_task
from ncaflow.viz.animate import animate

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def run_config(raw: dict[str, Any], tmp: Path, mirror: Path, **train_kw: Any) -> RunConfig:
    raw = {
        **raw,
        "data": {"root": str(tmp / "cache"), "mirror": str(mirror), **raw.get("data", {})},
    }
    train_cfg = {"progress": False, "device": "cpu", "checkpoint_every": 1000, **train_kw}
    cfg = from_dict(RunConfig, {**raw, "train": train_cfg})
    cfg.validate()
    return cfg


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
