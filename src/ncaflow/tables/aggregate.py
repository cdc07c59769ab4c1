"""Tables of a task's results: one row per grid cell, mean ± std over folds.

Input is the ``metrics.json`` of every trained model, laid out by the workflow as
``results/models/<task>/<cell>/fold<k>/metrics.json`` where ``<cell>`` reads like
``hidden~16_fire~0.5`` (alias ``~`` value, joined by ``_``; ``base`` for no grid).
The best cell is chosen on a validation metric only; test metrics are reported,
never used for selection.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import pandas as pd

from ncaflow.guard.io import atomic_write

__all__ = [
    "best_model",
    "collect",
    "parse_cell",
    "summarise",
    "to_latex",
    "to_markdown",
    "write_tables",
]

_FOLD = re.compile(r"^fold(\d+)$")


def _number(text: str) -> Any:
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return {"True": True, "False": False}.get(text, text)


def parse_cell(name: str) -> dict[str, Any]:
    """``"hidden~16_fire~0.5"`` -> ``{"hidden": 16, "fire": 0.5}``; ``"base"`` -> ``{}``."""
    if "~" not in name:
        return {}
    pairs = [part.split("~", 1) for part in name.split("_")]
    if any(len(p) != 2 for p in pairs):
        raise ValueError(f"grid cell {name!r} is not of the form alias~value_alias~value")
    return {alias: _number(value) for alias, value in pairs}


def collect(paths: list[str | Path]) -> pd.DataFrame:
    """Long table, one row per model: cell, fold, the cell's parameters, model dir, metrics."""
    rows = []
    for path in map(Path, paths):
        fold_dir = path.parent
        match = _FOLD.match(fold_dir.name)
        if match is None:
            raise ValueError(f"{path}: expected .../<cell>/fold<k>/metrics.json")
        try:
            metrics = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: not valid JSON ({err}); re-run its evaluation") from None
        cell = fold_dir.parent.name
        row = {"cell": cell, "fold": int(match.group(1)), **parse_cell(cell)}
        rows.append({**row, "model": str(fold_dir), **metrics})
    if not rows:
        raise ValueError("no metrics files given")
    return pd.DataFrame(rows).sort_values(["cell", "fold"], kind="stable", ignore_index=True)


def metric_columns(frame: pd.DataFrame) -> list[str]:
    """``val_*`` columns, then ``test_*`` columns, in the order the task reports them."""
    cols = [c for c in frame.columns if isinstance(c, str)]
    return [c for c in cols if c.startswith("val_")] + [c for c in cols if c.startswith("test_")]


def _check_metric(frame: pd.DataFrame, metric: str, mode: str) -> None:
    if not metric.startswith("val_"):
        raise ValueError(f"select metric {metric!r}: choose on a validation (val_*) metric")
    if metric not in frame.columns:
        raise ValueError(f"select metric {metric!r} not reported; have {metric_columns(frame)}")
    if mode not in ("min", "max"):
        raise ValueError(f"mode {mode!r}: choose min or max")


def summarise(frame: pd.DataFrame, *, metric: str, mode: str) -> pd.DataFrame:
    """One row per cell: its parameters, ``folds``, ``parameters``, ``<m>_mean``/``<m>_std``
    for every metric (sample std, NaN for one fold) and ``best`` (by ``metric`` alone)."""
    _check_metric(frame, metric, mode)
    metrics = metric_columns(frame)
    # the grid's aliases; other keys of a metrics file (e.g. a sweep's "seconds") are not
    aliases = list(dict.fromkeys(a for c in frame["cell"].unique() for a in parse_cell(c)))
    groups = frame.groupby("cell", sort=False)
    out = groups[aliases].first() if aliases else pd.DataFrame(index=groups.size().index)
    out["folds"] = groups.size()
    if "parameters" in frame.columns:
        out["parameters"] = groups["parameters"].first().astype(int)
    for m in metrics:
        out[f"{m}_mean"] = groups[m].mean()
        out[f"{m}_std"] = groups[m].std(ddof=1)
    means = out[f"{metric}_mean"]
    best = means.idxmin() if mode == "min" else means.idxmax()
    out["best"] = out.index == best
    return out.reset_index()


def best_model(frame: pd.DataFrame, summary: pd.DataFrame, *, metric: str, mode: str) -> str:
    """Model folder of the best fold (by ``metric``) of the best cell."""
    cell = summary.loc[summary["best"], "cell"].iloc[0]
    rows = frame[frame["cell"] == cell]
    pick = rows[metric].idxmin() if mode == "min" else rows[metric].idxmax()
    return str(rows.loc[pick, "model"])


def _fmt(mean: float, std: float, latex: bool = False) -> str:
    if math.isnan(mean):
        return "–"
    digits = 4 if abs(mean) >= 1e-3 or mean == 0 else 2
    text = f"{mean:.{digits}f}" if digits == 4 else f"{mean:.{digits}e}"
    if not math.isnan(std):
        pm = r" \pm " if latex else " ± "
        text += pm + (f"{std:.{digits}f}" if digits == 4 else f"{std:.{digits}e}")
    return f"${text}$" if latex else text


def _display(summary: pd.DataFrame, latex: bool) -> tuple[list[str], list[list[str]]]:
    metrics = [c.removesuffix("_mean") for c in summary.columns if c.endswith("_mean")]
    fixed = [c for c in summary.columns if c not in {"cell", "best"}]
    fixed = [c for c in fixed if not c.endswith(("_mean", "_std"))]
    if fixed[:1] == ["folds"]:  # no grid aliases (named variants): name the row by its cell
        fixed.insert(0, "cell")
    header = fixed + metrics
    rows = []
    for _, r in summary.iterrows():
        cells = [str(r[c]) for c in fixed]
        cells += [_fmt(r[f"{m}_mean"], r[f"{m}_std"], latex) for m in metrics]
        rows.append(cells)
    return header, rows


def to_markdown(summary: pd.DataFrame, *, title: str = "") -> str:
    """GitHub Markdown table; the best row in bold."""
    header, rows = _display(summary, latex=False)
    lines = [f"**{title}**", ""] if title else []
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for best, cells in zip(summary["best"], rows, strict=True):
        cells = [f"**{c}**" for c in cells] if best else cells
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _tex(text: str) -> str:
    return re.sub(r"([_%&#])", r"\\\1", text)


def to_latex(summary: pd.DataFrame, *, caption: str = "", label: str = "") -> str:
    """A booktabs ``table``; the best row in bold."""
    header, rows = _display(summary, latex=True)
    lines = [r"\begin{table}[t]", r"\centering"]
    if caption:
        lines.append(rf"\caption{{{_tex(caption)}}}")
    if label:
        lines.append(rf"\label{{{label}}}")
    lines += [rf"\begin{{tabular}}{{{'l' * len(header)}}}", r"\toprule"]
    lines.append(" & ".join(_tex(h) for h in header) + r" \\")
    lines.append(r"\midrule")
    for best, cells in zip(summary["best"], rows, strict=True):
        cells = [c if c.startswith("$") else _tex(c) for c in cells]
        if best:
            cells = [
                rf"\boldmath{{{c}}}" if c.startswith("$") else rf"\textbf{{{c}}}" for c in cells
            ]
        lines.append(" & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def _write_text(path: str | Path, text: str) -> None:
    def write(tmp: Path) -> None:
        tmp.write_text(text)

    atomic_write(path, write)


def write_tables(
    paths: list[str | Path],
    *,
    task: str,
    metric: str,
    mode: str,
    csv: str | Path,
    md: str | Path,
    tex: str | Path,
    folds_csv: str | Path,
    best: str | Path,
) -> pd.DataFrame:
    """Read the metrics files and write every table; returns the summary."""
    frame = collect(paths)
    summary = summarise(frame, metric=metric, mode=mode)
    caption = f"{task}: mean ± std over folds; best cell (bold) by {metric} ({mode})"
    writes = {
        folds_csv: frame.to_csv(index=False, float_format="%.6g"),
        csv: summary.to_csv(index=False, float_format="%.6g"),
        md: to_markdown(summary, title=caption),
        tex: to_latex(summary, caption=caption, label=f"tab:{task}"),
        best: best_model(frame, summary, metric=metric, mode=mode) + "\n",
    }
    for path, text in writes.items():
        _write_text(path, text)
    return summary
