"""Uncertainty heatmaps and GIF modes, with colour bars."""

from __future__ import annotations

import stat
from pathlib import Path
from typing import Any

import pytest
from helpers import digits_config
from matplotlib.figure import Figure

from ncaflow.model.cascade import build_model
from ncaflow.tasks import get_task
from ncaflow.viz.animate import animate
from ncaflow.viz.heatmaps import uncertainty_figure


def test_gif_and_heatmap_modes_and_colour_bars(
    tmp_path: Path, umask_022: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    bars: list[str] = []
    colorbar = Figure.colorbar

    def spy(self: Figure, *args: Any, **kwargs: Any) -> Any:
        bars.append(kwargs.get("label", ""))
        return colorbar(self, *args, **kwargs)

    monkeypatch.setattr(Figure, "colorbar", spy)
    cfg = digits_config()
    task = get_task(cfg.task)(config=cfg)
    task.setup()
    model = build_model(cfg)
    gif = tmp_path / "rollout.gif"
    assert animate(model, task, gif, steps=2, scale=1) == 3
    assert stat.S_IMODE(gif.stat().st_mode) == 0o644
    assert not list(tmp_path.glob(".*.tmp"))
    outs = [tmp_path / "u1.png", tmp_path / "u2.png"]
    for out in outs:
        uncertainty_figure(model, task, out, steps=2, n_rollouts=2, n_examples=1)
        assert stat.S_IMODE(out.stat().st_mode) == 0o644
    assert outs[0].read_bytes() == outs[1].read_bytes()
    # per example: a labelled bar for the mean probability and one for the variance
    assert bars == ["probability", "variance"] * 2


def test_heatmap_with_the_step_window_panel(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    titles: list[str] = []
    monkeypatch.setattr(
        "matplotlib.axes.Axes.set_title",
        lambda self, text, *a, **k: titles.append(text),
    )
    cfg = digits_config()
    task = get_task(cfg.task)(config=cfg)
    task.setup()
    model = build_model(cfg)
    out = tmp_path / "u.png"
    uncertainty_figure(model, task, out, steps=4, n_rollouts=2, n_examples=2, window=3)
    assert titles[:4] == [
        "one rollout",
        "largest mean probability",
        "variance over rollouts",
        "variance, last 3 steps",
    ]
    assert out.stat().st_size > 0
