"""The workflow's figures (matplotlib + seaborn, PNG and PDF, bundled DejaVu fonts only).

From a task's per-fold table (``results/tables/<task>_folds.csv``, see
:mod:`ncaflow.aggregate`): grid heatmap, fold box plots, learning curves (each
model's ``history.csv``) and parameters vs metric.  From the best model: a
growth strip (growing) and segmentation overlays with uncertainty.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
import torch
from matplotlib.figure import Figure

from ncaflow.aggregate import metric_columns

__all__ = [
    "SUMMARY",
    "curves_figure",
    "folds_figure",
    "grid_figure",
    "growth_strip",
    "params_figure",
    "save",
    "segmentation_overlay",
    "summary_figures",
]

SUMMARY = ("grid", "folds", "curves", "params")
STYLE: Any = {"font.family": "DejaVu Sans", "svg.fonttype": "none", "pdf.fonttype": 42}


def save(fig: Figure, prefix: str | Path) -> list[Path]:
    """Write ``prefix.png`` and ``prefix.pdf`` without timestamps (same input, same bytes)."""
    prefix = Path(prefix)
    prefix.parent.mkdir(parents=True, exist_ok=True)
    paths = [prefix.with_suffix(".png"), prefix.with_suffix(".pdf")]
    fig.savefig(paths[0], dpi=150, bbox_inches="tight", metadata={"Software": None})
    fig.savefig(paths[1], bbox_inches="tight", metadata={"CreationDate": None, "Creator": None})
    plt.close(fig)
    return paths


def _aliases(frame: pd.DataFrame) -> list[str]:
    skip = {"cell", "fold", "model", "parameters", *metric_columns(frame)}
    return [c for c in frame.columns if c not in skip]


def _test_of(metric: str, frame: pd.DataFrame) -> str:
    test = "test_" + metric.removeprefix("val_")
    return test if test in frame.columns else metric


def grid_figure(frame: pd.DataFrame, metric: str, mode: str) -> Figure:
    """Mean ``metric`` per cell; rows: first grid alias, columns: the others."""
    aliases = _aliases(frame)
    means = frame.groupby("cell", sort=False)[metric].mean()
    first = frame.groupby("cell", sort=False).first()
    if aliases:
        rows = first[aliases[0]].astype(str)
        rest = aliases[1:]
        cols = (
            first[rest].astype(str).apply(lambda r: ", ".join(f"{a}={r[a]}" for a in rest), axis=1)
            if rest
            else pd.Series(metric, index=first.index)
        )
        table = pd.DataFrame({"row": rows, "col": cols, "v": means}).pivot_table(
            index="row", columns="col", values="v", sort=False
        )
        table.index.name = aliases[0]
    else:
        table = pd.DataFrame({metric: [means.iloc[0]]}, index=["base"])
    values = table.to_numpy(dtype=float)
    flat = np.nanargmin(values) if mode == "min" else np.nanargmax(values)
    r, c = np.unravel_index(flat, values.shape)
    fig, ax = plt.subplots(figsize=(1.6 + 1.3 * table.shape[1], 1.2 + 0.6 * table.shape[0]))
    cmap = "viridis_r" if mode == "min" else "viridis"
    sns.heatmap(table, annot=True, fmt=".4g", cmap=cmap, cbar_kws={"label": metric}, ax=ax)
    ax.add_patch(plt.Rectangle((int(c), int(r)), 1, 1, fill=False, edgecolor="red", linewidth=2.5))
    ax.set_title(f"mean {metric} over folds (best outlined)")
    ax.set_xlabel(", ".join(aliases[1:]) if len(aliases) > 1 else "")
    return fig


def folds_figure(frame: pd.DataFrame, metric: str) -> Figure:
    """Box plot per cell with every fold as a point: validation metric and its test twin."""
    metrics = list(dict.fromkeys([metric, _test_of(metric, frame)]))
    fig, axes = plt.subplots(
        1,
        len(metrics),
        figsize=(1.5 + 1.2 * frame["cell"].nunique() * len(metrics), 3.6),
        squeeze=False,
    )
    for ax, m in zip(axes[0], metrics, strict=True):
        sns.boxplot(data=frame, x="cell", y=m, color="0.85", ax=ax, showfliers=False)
        sns.stripplot(data=frame, x="cell", y=m, hue="fold", palette="deep", ax=ax, size=6)
        ax.tick_params(axis="x", rotation=30)
        ax.set_xlabel("")
        ax.set_title(m)
    fig.tight_layout()
    return fig


def curves_figure(frame: pd.DataFrame, metric: str) -> Figure:
    """Training loss and validation metric against iteration; colour = cell, line = fold."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    palette = dict(
        zip(frame["cell"].unique(), sns.color_palette("deep", frame["cell"].nunique()), strict=True)
    )
    for _, row in frame.iterrows():
        path = Path(row["model"]) / "history.csv"
        if not path.exists():
            continue
        hist = pd.read_csv(path)
        label = (
            row["cell"]
            if row["fold"] == frame[frame["cell"] == row["cell"]]["fold"].min()
            else None
        )
        for ax, col in zip(axes, ["loss", metric], strict=True):
            if col in hist:
                ax.plot(
                    hist["iteration"], hist[col], color=palette[row["cell"]], label=label, alpha=0.8
                )
    axes[0].set_yscale("log")
    axes[0].set_title("training loss (at each evaluation)")
    axes[1].set_title(metric)
    for ax in axes:
        ax.set_xlabel("iteration")
    axes[1].legend(fontsize=7, loc="best")
    return fig


def params_figure(frame: pd.DataFrame, metric: str) -> Figure:
    """Trainable parameters against the mean test metric (± std over folds) per cell."""
    m = _test_of(metric, frame)
    g = frame.groupby("cell", sort=False).agg(
        p=("parameters", "first"), mean=(m, "mean"), std=(m, "std")
    )
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    ax.errorbar(g["p"], g["mean"], yerr=g["std"].fillna(0), fmt="o", capsize=3)
    for cell, r in g.iterrows():
        ax.annotate(
            str(cell), (r["p"], r["mean"]), fontsize=7, xytext=(4, 4), textcoords="offset points"
        )
    ax.set_xlabel("trainable parameters")
    ax.set_ylabel(m)
    ax.set_title(f"{m} vs model size")
    return fig


def summary_figures(
    folds_csv: str | Path, *, metric: str, mode: str, out_dir: str | Path
) -> list[Path]:
    """Write grid, folds, curves and params (.png + .pdf) into ``out_dir``."""
    frame = pd.read_csv(folds_csv)
    if metric not in frame.columns:
        raise ValueError(f"{folds_csv}: no column {metric!r}; have {metric_columns(frame)}")
    out = Path(out_dir)
    paths: list[Path] = []
    with plt.rc_context(STYLE), sns.axes_style("whitegrid"):
        paths += save(grid_figure(frame, metric, mode), out / "grid")
        paths += save(folds_figure(frame, metric), out / "folds")
        paths += save(curves_figure(frame, metric), out / "curves")
        paths += save(params_figure(frame, metric), out / "params")
    return paths


def _load(model_dir: str | Path):  # -> (model, task), both ready
    from ncaflow.io import config_of, load
    from ncaflow.tasks import get_task

    model = load(model_dir)
    config = config_of(model)
    task = get_task(config.task)(config=config, device="cpu")
    task.setup()
    return model, task


def _image(rgb: torch.Tensor) -> np.ndarray:
    """(3, H, W) in [0, 1] -> (H, W, 3) array for imshow."""
    return rgb.clamp(0, 1).permute(1, 2, 0).cpu().numpy()


@torch.no_grad()
def growth_strip(
    model_dir: str | Path, out: str | Path, *, columns: int = 8, seed: int = 0
) -> list[Path]:
    """Top: growth from the seed cell; bottom: regrowth after a circular cut."""
    from ncaflow.tasks.growing import circle_damage

    model, task = _load(model_dir)
    steps = task.eval_steps
    marks = np.unique(np.linspace(0, steps, columns).round().astype(int))
    gen = torch.Generator().manual_seed(seed)
    x, t, grown = task.examples("test", 1), 0, []
    for mark in marks:
        if mark > t:
            x = model(x, int(mark - t), generator=gen)
            t = int(mark)
        grown.append(x)
    hole = circle_damage(1, x.shape[2], x.shape[3], torch.Generator().manual_seed(seed))
    x, t, regrown = x * hole, 0, []
    for mark in marks:
        if mark > t:
            x = model(x, int(mark - t), generator=gen)
            t = int(mark)
        regrown.append(x)
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(2, len(marks), figsize=(1.4 * len(marks), 3.2), squeeze=False)
        for i, (row, name) in enumerate([(grown, "growth"), (regrown, "regrowth")]):
            for j, (state, mark) in enumerate(zip(row, marks, strict=True)):
                ax = axes[i, j]
                ax.imshow(_image(task.preview(state)[0]), interpolation="nearest")
                ax.set_xticks([])
                ax.set_yticks([])
                ax.set_title(f"{name} {mark}" if j == 0 else str(mark), fontsize=8)
        return save(fig, out)


@torch.no_grad()
def segmentation_overlay(
    model_dir: str | Path, out: str | Path, *, examples: int = 4, rollouts: int = 8, seed: int = 0
) -> list[Path]:
    """Rows: test (then validation) images; columns: image + true outline, mean predicted
    probability over stochastic rollouts, per-pixel std over the rollouts."""
    from ncaflow.uncertainty import stochastic_rollouts

    model, task = _load(model_dir)
    splits = getattr(task, "splits", {})
    pairs = [(s, i) for s in ("test", "val") if s in splits for i in range(len(splits[s][0]))]
    pairs = pairs[:examples]
    if not pairs:
        raise ValueError(f"{model_dir}: the task has no test or validation images")
    gen = torch.Generator().manual_seed(seed)
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(len(pairs), 3, figsize=(7.5, 2.5 * len(pairs)), squeeze=False)
        for row, (split, i) in enumerate(pairs):
            image, truth = splits[split][0][i : i + 1], splits[split][1][i : i + 1]
            state = task.seed_state(image, task.config.model.channels)
            mean, var = stochastic_rollouts(
                model, state, task.eval_steps, n=rollouts, generator=gen, readout=task.pixel_map
            )
            rgb, t = _image(image[0]), truth[0, 0].cpu().numpy()
            p, sd = mean[0, 0].cpu().numpy(), var[0, 0].sqrt().cpu().numpy()
            axes[row, 0].imshow(rgb)
            axes[row, 0].contour(t, levels=[0.5], colors="lime", linewidths=1.2)
            axes[row, 0].set_title(f"{split} image + truth", fontsize=8)
            axes[row, 1].imshow(rgb)
            axes[row, 1].imshow(p, cmap="magma", alpha=0.55, vmin=0, vmax=1)
            axes[row, 1].contour(t, levels=[0.5], colors="lime", linewidths=1.0)
            axes[row, 1].set_title(f"mean probability ({rollouts} rollouts)", fontsize=8)
            im = axes[row, 2].imshow(sd, cmap="viridis", vmin=0)
            axes[row, 2].set_title("std over rollouts", fontsize=8)
            fig.colorbar(im, ax=axes[row, 2], fraction=0.046)
        for ax in axes.flat:
            ax.set_xticks([])
            ax.set_yticks([])
        return save(fig, out)
