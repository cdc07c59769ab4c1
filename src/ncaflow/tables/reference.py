"""The README's reference tables, built from saved models and their metrics files.

Three tables beside the tasks' own (``ncaflow aggregate``):

- ``runs``: one row per reference run (a model folder): its task, parameters, the
  task's headline test metrics and how long it trained (last row of history.csv).
- ``evaluations``: models evaluated again with other evaluation settings (e.g. more
  rollouts averaged): mean ± std over the seeds (folds) of each cell and setting.
- ``ensembles``: several models' class scores averaged, over evaluation seeds.

Standard deviations are sample ones (``ddof=1``), as in the tasks' tables; a single
value has none (``–``).  Selection never happens here: these tables only report.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from ncaflow.config import ConfigError
from ncaflow.guard.io import atomic_write
from ncaflow.tasks import get_task

__all__ = [
    "read_metrics",
    "run_row",
    "runs_markdown",
    "spread",
    "spread_markdown",
    "write",
]


def _json(path: Path) -> dict[str, Any]:
    try:
        data: dict[str, Any] = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: cannot read it ({err}); re-run the job that writes it") from None
    return data


def run_row(name: str, folder: str | Path) -> dict[str, Any]:
    """One reference run from its model folder (metrics.json, model.json, history.csv)."""
    folder = Path(folder)
    metrics = _json(folder / "metrics.json")
    task = _json(folder / "model.json")["config"]["task"]
    try:
        headline = get_task(task).headline
    except ConfigError as err:
        raise ValueError(f"{folder}/model.json: {err}; re-run the job that trains it") from None
    with (folder / "history.csv").open() as f:
        last = list(csv.DictReader(f))[-1]
    row = {"run": name, "task": task, "parameters": int(metrics["parameters"])}
    row.update({key: metrics[key] for key, _ in headline})
    row.update(iterations=int(float(last["iteration"])), seconds=float(last["seconds"]))
    return row


def runs_markdown(rows: Sequence[dict[str, Any]]) -> str:
    """``| run | task | parameters | results | training |``, one line per run."""
    lines = ["| run | task | parameters | results | training |", "| --- | --- | ---: | --- | --- |"]
    for r in rows:
        headline = get_task(r["task"]).headline
        cells = ", ".join(f"{label} {r[key]:.4g}" for key, label in headline)
        trained = f"{r['iterations']} it, {r['seconds']:.0f} s"
        lines.append(f"| {r['run']} | {r['task']} | {r['parameters']:,} | {cells} | {trained} |")
    return "\n".join(lines) + "\n"


def spread(
    rows: Sequence[dict[str, Any]], by: Sequence[str], metrics: Sequence[str]
) -> pd.DataFrame:
    """Mean and sample std of ``metrics`` per group of ``by`` (groups in input order), with
    ``n`` (rows per group) and ``parameters``; rows are dicts of metrics-file values."""
    frame = pd.DataFrame(list(rows))
    missing = [m for m in metrics if m not in frame.columns]
    if missing:
        raise ValueError(f"metrics {missing} not in the metrics files; have {list(frame.columns)}")
    groups = frame.groupby(list(by), sort=False)
    out = groups.size().rename("n").to_frame()
    out["parameters"] = groups["parameters"].first().astype(int)
    for m in metrics:
        out[f"{m}_mean"] = groups[m].mean()
        out[f"{m}_std"] = groups[m].std(ddof=1)
    return out.reset_index()


def _pm(mean: float, std: float) -> str:
    return f"{mean:.3f}" if math.isnan(std) else f"{mean:.3f} ± {std:.3f}"


def spread_markdown(table: pd.DataFrame, by: Sequence[str], metrics: Sequence[str]) -> str:
    """Markdown of :func:`spread`'s table: the group columns, n, parameters, mean ± std."""
    head = [*by, "n", "parameters", *metrics]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for _, r in table.iterrows():
        cells = [str(r[c]) for c in by] + [str(r["n"]), f"{r['parameters']:,}"]
        cells += [_pm(r[f"{m}_mean"], r[f"{m}_std"]) for m in metrics]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write(path: str | Path, text: str) -> None:
    """Write a table file atomically (a failing job leaves no partial table)."""
    atomic_write(path, lambda tmp: tmp.write_text(text))


def read_metrics(path: str | Path) -> dict[str, Any]:
    """A metrics JSON (``ncaflow evaluate --out``), with a clear error if unreadable."""
    return _json(Path(path))
