"""The figures read as a paper's would: human labels, colour bars, a legend per fold,
error bars inside a metric's range, the same bytes from the same input, and files
that others can read (mode 0644 under umask 022)."""

from __future__ import annotations

import stat
import warnings
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure
from matplotlib.text import Text

from ncaflow.tasks import get_task
from ncaflow.viz import figures

RAW_NAMES = ("val_", "test_", "~", "hidden=")


def folds_frame(tmp: Path, metric: str = "dice") -> pd.DataFrame:
    """Two cells x three folds of a segmentation-like table, with a history per model.
    Fold 0 of each cell scores 0, so mean - std < 0: an unclipped bar would go below 0."""
    rows, rng = [], np.random.default_rng(1)
    for hidden in (8, 12):
        for fold in range(3):
            model = tmp / "models" / f"hidden~{hidden}" / f"fold{fold}"
            model.mkdir(parents=True)
            it = np.arange(0, 101, 20)
            pd.DataFrame(
                {
                    "iteration": it,
                    "loss": hidden / (8 + it + fold),
                    f"val_{metric}": np.minimum(1, it / 100 * (0.3 + 0.1 * fold + hidden / 40)),
                }
            ).to_csv(model / "history.csv", index=False)
            score = [0.0, 0.02, 0.3 + 0.1 * rng.random()][fold]
            rows.append(
                {
                    "cell": f"hidden~{hidden}",
                    "fold": fold,
                    "hidden": hidden,
                    "model": str(model),
                    "parameters": 100 * hidden,
                    "val_loss": 1 - score,
                    f"val_{metric}": score,
                    "test_loss": 1.1 - score,
                    f"test_{metric}": score,
                }
            )
    return pd.DataFrame(rows)


def texts(fig: Figure) -> list[str]:
    """Every visible string of a figure: titles, axis and tick labels, legends, colour bars."""
    return [t.get_text() for t in fig.findobj(Text) if t.get_visible() and t.get_text()]


def test_summary_figures_speak_words(tmp_path: Path) -> None:
    frame = folds_frame(tmp_path)
    for fig in (
        figures.grid_figure(frame, "val_dice", "max"),
        figures.folds_figure(frame, "val_dice"),
        figures.curves_figure(frame, "val_dice"),
        figures.params_figure(frame, "val_dice"),
    ):
        shown = texts(fig)
        raw = [t for t in shown if any(r in t for r in RAW_NAMES)]
        assert not raw, raw
        plt.close(fig)
    grid = figures.grid_figure(frame, "val_dice", "max")
    heat, bar = grid.axes  # the heatmap and its colour bar
    assert bar.get_ylabel() == "validation Dice"
    assert heat.get_title() == "validation Dice\nmean over folds, highest outlined"
    assert heat.get_ylabel() == "hidden channels"
    plt.close(grid)


def test_grid_numbers_share_one_format(tmp_path: Path) -> None:
    """A 2 x 1 heatmap of 0.00615 and 0.0045 shows both with the same decimals."""
    frame = folds_frame(tmp_path)
    frame["val_loss"] = np.where(frame["hidden"] == 8, 0.00615, 0.0045)
    fig = figures.grid_figure(frame, "val_loss", "min")
    numbers = [t.get_text() for t in fig.axes[0].texts]
    assert sorted(numbers) == ["0.00450", "0.00615"]
    plt.close(fig)
    assert figures.number_format(np.array([15360.0, 4160.0])) == ".0f"
    assert figures.number_format(np.array([0.515, 0.675])) == ".3f"


def test_params_figure_spreads_cells_that_share_a_parameter_count(tmp_path: Path) -> None:
    frame = folds_frame(tmp_path)
    frame["parameters"] = 15360
    fig = figures.params_figure(frame, "val_dice")
    ax = fig.axes[0]
    ticks = [t.get_text() for t in ax.get_xticklabels()]
    assert ticks == [
        "hidden channels = 8\n15,360 parameters",
        "hidden channels = 12\n15,360 parameters",
    ]
    (errorbar,) = ax.containers
    xs = errorbar[0].get_xdata()
    assert len(set(np.round(xs, 6))) == 2  # one column per cell, not one x for both
    plt.close(fig)


def test_folds_figure_draws_points_and_merges_identical_panels(tmp_path: Path) -> None:
    frame = folds_frame(tmp_path)  # three folds: points and means, no box of three points
    frame["test_dice"] = frame["val_dice"] * 0.9
    fig = figures.folds_figure(frame, "val_dice")
    assert len(fig.axes) == 2
    assert all(not ax.patches for ax in fig.axes)  # a box plot draws PathPatches
    assert all(len(ax.collections) >= 3 for ax in fig.axes)  # the folds' points
    plt.close(fig)
    same = frame.assign(test_dice=frame["val_dice"])  # growing: one target for both
    fig = figures.folds_figure(same, "val_dice")
    assert len(fig.axes) == 1 and "the same data" in fig.axes[0].get_title()
    plt.close(fig)
    five = pd.concat([frame.assign(fold=frame["fold"] + 3 * k) for k in range(2)])
    with warnings.catch_warnings():  # no deprecated call (seaborn's box plot passed `vert`)
        warnings.simplefilter("error")
        fig = figures.folds_figure(five, "val_dice")  # six folds: a box behind the points
    assert len(fig.axes[0].patches) == 2  # a box per cell
    plt.close(fig)


def test_one_legend_entry_per_fold(tmp_path: Path) -> None:
    frame = folds_frame(tmp_path)
    fig = figures.folds_figure(frame, "val_dice")
    legend = fig.axes[-1].get_legend()
    assert [t.get_text() for t in legend.get_texts()] == ["fold 0", "fold 1", "fold 2", "mean"]
    plt.close(fig)
    curves = figures.curves_figure(frame, "val_dice")
    entries = [[t.get_text() for t in legend.get_texts()] for legend in curves.legends]
    assert entries == [
        ["hidden channels = 8", "hidden channels = 12"],
        ["fold 0", "fold 1", "fold 2"],
    ]
    assert len(curves.axes[1].get_lines()) == 6  # every model's validation curve
    plt.close(curves)


def test_dice_error_bars_stay_in_0_1(tmp_path: Path) -> None:
    frame = folds_frame(tmp_path)
    g = frame.groupby("cell")["test_dice"]
    assert (g.mean() - g.std() < 0).all()  # the case the clipping is for
    fig = figures.params_figure(frame, "val_dice")
    (errorbar,) = fig.axes[0].containers
    segments = np.concatenate([seg for lc in errorbar[2] for seg in lc.get_segments()])
    assert segments[:, 1].min() >= 0.0 and segments[:, 1].max() <= 1.0
    plt.close(fig)
    bars = figures.error_bars(np.array([0.05, 0.97, 0.5]), np.array([0.2, 0.2, np.nan]), "dice")
    np.testing.assert_allclose(bars, [[0.05, 0.2, 0.0], [0.2, 0.03, 0.0]])
    loss = figures.error_bars(np.array([0.05]), np.array([0.2]), "val_loss")
    np.testing.assert_allclose(loss, [[0.2], [0.2]])  # unbounded metrics keep ± std


def test_summary_figures_are_deterministic(tmp_path: Path, umask_022: None) -> None:
    frame = folds_frame(tmp_path)
    csv = tmp_path / "folds.csv"
    frame.to_csv(csv, index=False)
    runs = [
        figures.summary_figures(csv, metric="val_dice", mode="max", out_dir=tmp_path / name)
        for name in ("a", "b")
    ]
    assert [p.name for p in runs[0]] == [p.name for p in runs[1]]
    assert len(runs[0]) == 2 * len(figures.SUMMARY)
    for a, b in zip(*runs, strict=True):
        assert a.read_bytes() == b.read_bytes(), a.name  # seeded jitter, no timestamps
        assert stat.S_IMODE(a.stat().st_mode) == 0o644


def test_one_cell_draws_folds_and_curves_and_refuses_a_comparison(tmp_path: Path) -> None:
    """A grid of one cell has nothing for the heatmap or the size plot to compare: the
    workflow asks for folds and curves only, and asking for grid or params says why not."""
    frame = folds_frame(tmp_path)
    csv = tmp_path / "folds.csv"
    frame[frame["cell"] == "hidden~8"].to_csv(csv, index=False)
    paths = figures.summary_figures(
        csv, metric="val_dice", mode="max", out_dir=tmp_path / "one", kinds=("folds", "curves")
    )
    assert sorted(p.name for p in paths) == [
        "curves.pdf", "curves.png", "folds.pdf", "folds.png"
    ]  # fmt: skip
    with pytest.raises(ValueError, match="one grid cell, nothing for grid, params to compare"):
        figures.summary_figures(csv, metric="val_dice", mode="max", out_dir=tmp_path / "two")
    assert not (tmp_path / "two").exists() or not list((tmp_path / "two").iterdir())


def test_every_task_figure_is_drawn_and_offered_by_the_cli() -> None:
    from ncaflow.cli import build_parser
    from ncaflow.tasks import TASKS
    from ncaflow.viz.figures import PER_MODEL

    named = {f for name in TASKS for f in get_task(name).figures}
    assert named == set(PER_MODEL)  # every figure a task names is drawn, none is orphaned
    figures = build_parser()._subparsers._group_actions[0].choices["figures"]  # type: ignore[union-attr]
    kinds = next(a for a in figures._actions if a.dest == "kind").choices
    assert list(kinds) == ["summary", *PER_MODEL]
