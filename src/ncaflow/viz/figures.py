"""The workflow's figures (matplotlib + seaborn, PNG and PDF, bundled DejaVu fonts only).

From a task's per-fold table (``results/tables/<task>_folds.csv``, see
:mod:`ncaflow.tables.aggregate`): grid heatmap, fold box plots, learning curves (each
model's ``history.csv``) and parameters vs metric.  From the best model: a
growth strip (growing) and segmentation overlays with uncertainty.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
import torch
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from ncaflow.guard.io import atomic_write
from ncaflow.tables.aggregate import metric_columns
from ncaflow.viz.labels import alias_label, bounds, cell_label, metric_label

__all__ = [
    "SUMMARY",
    "curves_figure",
    "error_bars",
    "folds_figure",
    "grid_figure",
    "growth_strip",
    "number_format",
    "params_figure",
    "save",
    "segmentation_overlay",
    "summary_figures",
]

SUMMARY = ("grid", "folds", "curves", "params")
SPLIT_NAMES = {"val": "validation", "test": "test"}
STYLE: Any = {"font.family": "DejaVu Sans", "svg.fonttype": "none", "pdf.fonttype": 42}


def save(fig: Figure, prefix: str | Path) -> list[Path]:
    """Write ``prefix.png`` and ``prefix.pdf`` without timestamps (same input, same bytes)."""
    prefix = Path(prefix)
    prefix.parent.mkdir(parents=True, exist_ok=True)
    paths = [prefix.with_suffix(".png"), prefix.with_suffix(".pdf")]
    # atomically: a link planted at a figure's path is replaced, never written through
    png = {"dpi": 150, "metadata": {"Software": None}}
    pdf = {"metadata": {"CreationDate": None, "Creator": None}}
    for path, kind, options in ((paths[0], "png", png), (paths[1], "pdf", pdf)):

        def write(tmp: Path, kind: str = kind, options: dict[str, Any] = options) -> None:
            fig.savefig(tmp, format=kind, bbox_inches="tight", **options)

        atomic_write(path, write)
    plt.close(fig)
    return paths


def _aliases(frame: pd.DataFrame) -> list[str]:
    skip = {"cell", "fold", "model", "parameters", *metric_columns(frame)}
    return [c for c in frame.columns if c not in skip]


def _test_of(metric: str, frame: pd.DataFrame) -> str:
    test = "test_" + metric.removeprefix("val_")
    return test if test in frame.columns else metric


def _cells(frame: pd.DataFrame) -> list[str]:
    return [str(c) for c in frame["cell"].unique()]


def _folds(frame: pd.DataFrame) -> list[Any]:
    return sorted(frame["fold"].unique())


def _cell_ticks(ax: Any, cells: list[str]) -> None:
    ax.set_xticks(range(len(cells)))
    ax.set_xticklabels([cell_label(c) for c in cells], rotation=20, ha="right", fontsize=8)


def number_format(values: np.ndarray, digits: int = 3) -> str:
    """One fixed-point format for every number of a table: ``digits`` significant digits
    for its largest magnitude (0.515 and 0.675; 0.00615 and 0.00449; 15360)."""
    finite = np.abs(values[np.isfinite(values)])
    top = float(finite.max()) if finite.size else 0.0
    if top == 0.0:
        return ".0f"
    return f".{max(0, digits - 1 - int(np.floor(np.log10(top))))}f"


def grid_figure(frame: pd.DataFrame, metric: str, mode: str) -> Figure:
    """Mean ``metric`` per cell as a heatmap with a colour bar; rows: the first grid
    alias, columns: the others; the best cell outlined."""
    aliases = _aliases(frame)
    means = frame.groupby("cell", sort=False)[metric].mean()
    first = frame.groupby("cell", sort=False).first()
    name = metric_label(metric)
    if aliases:
        rows = first[aliases[0]].astype(str)
        rest = aliases[1:]
        cols = (
            first[rest]
            .astype(str)
            .apply(lambda r: ", ".join(f"{alias_label(a)} = {r[a]}" for a in rest), axis=1)
            if rest
            else pd.Series(name, index=first.index)
        )
        table = pd.DataFrame({"row": rows, "col": cols, "v": means}).pivot_table(
            index="row", columns="col", values="v", sort=False
        )
    else:
        table = pd.DataFrame({name: [means.iloc[0]]}, index=["one cell"])
    values = table.to_numpy(dtype=float)
    flat = np.nanargmin(values) if mode == "min" else np.nanargmax(values)
    r, c = np.unravel_index(flat, values.shape)
    fig, ax = plt.subplots(figsize=(2.8 + 1.5 * table.shape[1], 1.6 + 0.6 * table.shape[0]))
    cmap = "viridis_r" if mode == "min" else "viridis"
    sns.heatmap(
        table,
        annot=True,
        fmt=number_format(values),
        cmap=cmap,
        cbar=True,
        cbar_kws={"label": name},
        ax=ax,
    )
    ax.add_patch(plt.Rectangle((int(c), int(r)), 1, 1, fill=False, edgecolor="red", linewidth=2.5))
    best = "lowest" if mode == "min" else "highest"
    # two short lines, so that the title stays clear of the colour bar's label
    ax.set_title(f"{name}\nmean over folds, {best} outlined", fontsize=10)
    ax.set_ylabel(alias_label(aliases[0]) if aliases else "")
    ax.set_xlabel(", ".join(alias_label(a) for a in aliases[1:]))
    ax.tick_params(axis="y", rotation=0)
    return fig


def folds_figure(frame: pd.DataFrame, metric: str, *, seed: int = 0) -> Figure:
    """Every fold as a point per cell (seeded jitter, one legend entry per fold) with the
    mean as a bar, and a box plot behind them from 5 folds on (fewer make no box): the
    validation metric and its test twin, one panel when the two columns are the same
    numbers (growing: one target image for both)."""
    test = _test_of(metric, frame)
    same = test != metric and np.allclose(frame[metric], frame[test], equal_nan=True)
    metrics = [metric] if same or test == metric else [metric, test]
    cells, folds = _cells(frame), _folds(frame)
    where = {c: i for i, c in enumerate(cells)}
    colours = sns.color_palette("deep", len(folds))
    fig, axes = plt.subplots(
        1, len(metrics), figsize=(2.0 + 1.4 * len(cells) * len(metrics), 3.8), squeeze=False
    )
    for ax, m in zip(axes[0], metrics, strict=True):
        rng = np.random.default_rng(seed)  # the same jitter in both panels
        if len(folds) >= 5:  # matplotlib's box plot: seaborn 0.13's passes `vert`, which
            # Matplotlib deprecates from 3.11 and drops in 3.13
            ax.boxplot(
                [frame.loc[frame["cell"].astype(str) == c, m].dropna() for c in cells],
                positions=range(len(cells)), widths=0.6, showfliers=False, patch_artist=True,
                manage_ticks=False, boxprops={"facecolor": "0.88", "edgecolor": "0.55"},
                whiskerprops={"color": "0.55"}, capprops={"color": "0.55"},
                medianprops={"color": "0.55"},
            )  # fmt: skip
        means = frame.groupby("cell", sort=False)[m].mean()
        for cell, mean in means.items():
            i = where[str(cell)]
            ax.hlines(mean, i - 0.3, i + 0.3, color="0.25", linewidth=2, zorder=2)
        for fold, colour in zip(folds, colours, strict=True):
            rows = frame[frame["fold"] == fold]
            x = rows["cell"].astype(str).map(where).to_numpy(float)
            x = x + rng.uniform(-0.15, 0.15, len(x))
            ax.scatter(
                x, rows[m], s=36, color=colour, edgecolor="white", zorder=3, label=f"fold {fold}"
            )
        _cell_ticks(ax, cells)
        ax.set_xlim(-0.6, len(cells) - 0.4)
        ax.set_xlabel("")
        ax.set_ylabel(metric_label(m))
        title = metric_label(m)
        if same:
            title = f"{title} (= {metric_label(test)}: the same data)"
        ax.set_title(title, fontsize=10)
    handles, labels = axes[0, -1].get_legend_handles_labels()
    handles.append(Line2D([], [], color="0.25", linewidth=2))
    labels.append("mean")
    axes[0, -1].legend(
        handles, labels, title="fold", fontsize=8, loc="center left", bbox_to_anchor=(1.02, 0.5)
    )
    fig.tight_layout()
    return fig


def curves_figure(frame: pd.DataFrame, metric: str) -> Figure:
    """Training loss and the validation metric against iteration (each model's
    history.csv); colour = grid cell, line style = fold, a legend for each."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.9))
    cells, folds = _cells(frame), _folds(frame)
    colour = dict(zip(cells, sns.color_palette("deep", len(cells)), strict=True))
    styles: list[Any] = ["-", "--", ":", "-."]
    style = {f: styles[i % len(styles)] for i, f in enumerate(folds)}
    for _, row in frame.iterrows():
        path = Path(row["model"]) / "history.csv"
        if not path.exists():
            continue
        hist = pd.read_csv(path)
        for ax, col in zip(axes, ["loss", metric], strict=True):
            if col in hist:
                ax.plot(
                    hist["iteration"],
                    hist[col],
                    color=colour[str(row["cell"])],
                    linestyle=style[row["fold"]],
                    alpha=0.85,
                )
    axes[0].set_yscale("log")
    axes[0].set_title("training loss (at each evaluation)")
    axes[0].set_ylabel("training loss (log scale)")
    axes[1].set_title(metric_label(metric))
    axes[1].set_ylabel(metric_label(metric))
    for ax in axes:
        ax.set_xlabel("training iteration")
    by_cell = [Line2D([], [], color=colour[c], label=cell_label(c)) for c in cells]
    by_fold = [Line2D([], [], color="0.3", linestyle=style[f], label=f"fold {f}") for f in folds]
    fig.tight_layout()
    # beside the axes, as figure legends so that the saved bounding box keeps them
    fig.legend(
        handles=by_cell, title="grid cell", fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 0.95)
    )
    fig.legend(
        handles=by_fold, title="fold", fontsize=8, loc="lower left", bbox_to_anchor=(1.0, 0.1)
    )
    return fig


def error_bars(mean: np.ndarray, std: np.ndarray, metric: str) -> np.ndarray:
    """(2, N) lower and upper bar lengths: ± std, clipped to [0, 1] for bounded metrics
    (no Dice below 0 or accuracy above 1); a missing std (one fold) draws no bar."""
    std = np.nan_to_num(np.asarray(std, float))
    mean = np.asarray(mean, float)
    lower, upper = std.copy(), std.copy()
    limits = bounds(metric)
    if limits is not None:
        lower = np.clip(np.minimum(lower, mean - limits[0]), 0, None)
        upper = np.clip(np.minimum(upper, limits[1] - mean), 0, None)
    return np.stack([lower, upper])


def params_figure(frame: pd.DataFrame, metric: str) -> Figure:
    """Trainable parameters against the mean test metric (± std over folds, clipped to
    the metric's range) per cell. When cells share a parameter count the x axis would
    stack them: then one column per cell, its parameter count in the tick label."""
    m = _test_of(metric, frame)
    g = frame.groupby("cell", sort=False).agg(
        p=("parameters", "first"), mean=(m, "mean"), std=(m, "std")
    )
    yerr = error_bars(g["mean"].to_numpy(), g["std"].to_numpy(), m)
    distinct = g["p"].nunique() == len(g)
    fig, ax = plt.subplots(figsize=(5.8 if distinct else 2.6 + 1.2 * len(g), 3.9))
    if distinct:
        ax.errorbar(g["p"], g["mean"], yerr=yerr, fmt="o", capsize=3)
        for cell, r in g.iterrows():
            ax.annotate(
                cell_label(str(cell)),
                (r["p"], r["mean"]),
                fontsize=7,
                xytext=(4, 4),
                textcoords="offset points",
            )
        ax.set_xlabel("trainable parameters")
        ax.set_title(f"{metric_label(m)} against model size", fontsize=10)
    else:
        x = np.arange(len(g))
        ax.errorbar(x, g["mean"], yerr=yerr, fmt="o", capsize=3)
        ax.set_xticks(x)
        ax.set_xticklabels(
            [f"{cell_label(str(c))}\n{int(p):,} parameters" for c, p in g["p"].items()],
            fontsize=8,
        )
        ax.set_xlim(-0.6, len(g) - 0.4)
        ax.set_xlabel("")
        shared = g["p"].nunique() == 1
        what = "all cells" if shared else "some cells"
        ax.set_title(
            f"{metric_label(m)} per grid cell\n({what} share a parameter count)", fontsize=10
        )
    ax.set_ylabel(f"{metric_label(m)} (mean ± std over folds)")
    return fig


def summary_figures(
    folds_csv: str | Path,
    *,
    metric: str,
    mode: str,
    out_dir: str | Path,
    kinds: Sequence[str] = SUMMARY,
) -> list[Path]:
    """Write the summary figures ``kinds`` (of grid, folds, curves, params; .png + .pdf) into
    ``out_dir``. grid and params compare cells: they need at least two."""
    frame = pd.read_csv(folds_csv)
    if metric not in frame.columns:
        raise ValueError(f"{folds_csv}: no column {metric!r}; have {metric_columns(frame)}")
    comparing = [k for k in kinds if k in ("grid", "params")]
    if comparing and len(_cells(frame)) < 2:
        raise ValueError(
            f"{folds_csv}: one grid cell, nothing for {', '.join(comparing)} to compare; "
            "draw folds and curves only (workflow: a grid of two or more values)"
        )
    draw = {
        "grid": lambda: grid_figure(frame, metric, mode),
        "folds": lambda: folds_figure(frame, metric),
        "curves": lambda: curves_figure(frame, metric),
        "params": lambda: params_figure(frame, metric),
    }
    out = Path(out_dir)
    paths: list[Path] = []
    with plt.rc_context(STYLE), sns.axes_style("whitegrid"):
        for kind in kinds:
            paths += save(draw[kind](), out / kind)
    return paths


def _load(model_dir: str | Path):  # -> (model, task), both ready
    from ncaflow.guard.io import config_of, load
    from ncaflow.inference.evaluate import with_overrides
    from ncaflow.tasks import get_task

    model = load(model_dir)
    config = with_overrides(config_of(model), [])  # the model file chooses no data path
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
    from ncaflow.tasks.augment import circle_damage

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
                ax.set_title(f"{name}, step {mark}" if j == 0 else f"step {mark}", fontsize=8)
        return save(fig, out)


def _colour_bar(fig: Figure, mappable: Any, ax: Any, label: str) -> None:
    bar = fig.colorbar(mappable, ax=ax, fraction=0.046, pad=0.03)
    bar.set_label(label, fontsize=8)
    bar.ax.tick_params(labelsize=7)


@torch.no_grad()
def segmentation_overlay(
    model_dir: str | Path, out: str | Path, *, examples: int = 4, rollouts: int = 8, seed: int = 0
) -> list[Path]:
    """Rows: test (then validation) images; columns: image + true outline, mean predicted
    probability over stochastic rollouts, per-pixel std over the rollouts."""
    from ncaflow.model.uncertainty import stochastic_rollouts

    model, task = _load(model_dir)
    splits = task.splits
    pairs = [(s, i) for s in ("test", "val") if s in splits for i in range(len(splits[s][0]))]
    pairs = pairs[:examples]
    if not pairs:
        raise ValueError(f"{model_dir}: the task has no test or validation images")
    gen = torch.Generator().manual_seed(seed)
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(len(pairs), 3, figsize=(9.0, 2.5 * len(pairs)), squeeze=False)
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
            axes[row, 0].set_title(
                f"{SPLIT_NAMES.get(split, split)} image, true outline", fontsize=8
            )
            axes[row, 1].imshow(rgb)
            axes[row, 1].imshow(p, cmap="magma", alpha=0.55, vmin=0, vmax=1)
            axes[row, 1].contour(t, levels=[0.5], colors="lime", linewidths=1.0)
            axes[row, 1].set_title(f"mean probability ({rollouts} rollouts)", fontsize=8)
            # the bar shows the colour map itself, not the half-transparent overlay
            prob = ScalarMappable(norm=Normalize(0, 1), cmap="magma")
            _colour_bar(fig, prob, axes[row, 1], "probability")
            im = axes[row, 2].imshow(sd, cmap="viridis", vmin=0)
            axes[row, 2].set_title("standard deviation over rollouts", fontsize=8)
            _colour_bar(fig, im, axes[row, 2], "standard deviation")
        for ax in axes.flat:
            ax.set_xticks([])
            ax.set_yticks([])
        return save(fig, out)


# The per-model figures, by the name a task gives them (Task.figures), which is also the
# `ncaflow figures` kind and the workflow's figure file: name -> draw(model_dir, out).
PER_MODEL: dict[str, Callable[[str | Path, str | Path], list[Path]]] = {
    "growth": growth_strip,
    "overlay": segmentation_overlay,
}
