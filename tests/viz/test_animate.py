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
        assert gif.size == (2 * 24 * 2 + 4, 2 * 24 + 14 + 14)  # a title row, a caption bar


def test_gif_frames_title_both_panels_and_show_the_colour_key() -> None:
    import torch

    from ncaflow.tasks.segmentation import Segmentation
    from ncaflow.tasks.selfclass import SelfClassification
    from ncaflow.viz.animate import render_frame

    key = SelfClassification.preview_key(None)  # type: ignore[arg-type]
    assert [label for label, _ in key] == [str(k) for k in range(10)]
    panels = [torch.zeros(3, 28, 28), torch.ones(3, 28, 28)]
    plain = render_frame(panels, "step 0/2", 4)
    framed = render_frame(panels, "step 0/2", 4, titles=["class per cell", "hidden 1-3"], key=key)
    assert framed.height >= plain.height + 14 + 14  # a title row and at least one key row
    colours = {c for _, c in framed.getcolors(1 << 16)}
    for _, rgb in key:  # every class colour is drawn as a swatch
        assert tuple(round(255 * v) for v in rgb) in colours
    seg_key = Segmentation.preview_key(None)  # type: ignore[arg-type]
    assert [label for label, _ in seg_key] == ["predicted polyp", "its border"]
