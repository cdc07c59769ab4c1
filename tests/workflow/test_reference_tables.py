"""ncaflow.tables.reference (the README's reference tables) and the aggregate tables of named
variants, on small synthetic metrics files (fast; no Snakemake)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from ncaflow.tables.aggregate import collect, summarise, to_markdown
from ncaflow.tables.reference import run_row, runs_markdown, spread, spread_markdown


def model_folder(root: Path, metrics: dict, task: str = "classification") -> Path:
    root.mkdir(parents=True)
    (root / "metrics.json").write_text(json.dumps(metrics))
    (root / "model.json").write_text(json.dumps({"config": {"task": task}}))
    (root / "history.csv").write_text("iteration,loss,seconds\n100.0,0.5,10.2\n2700.0,0.1,166.6\n")
    return root


def test_run_row_reads_metrics_config_and_training_time(tmp_path: Path) -> None:
    metrics = {"parameters": 4352, "test_acc": 0.3269, "test_auc": 0.8252, "test_f1": 0.2993}
    row = run_row("vote", model_folder(tmp_path / "m", metrics))
    assert row["iterations"] == 2700 and round(row["seconds"]) == 167
    text = runs_markdown([row])
    assert "| vote | classification | 4,352 | test ACC 0.3269, test AUC 0.8252, F1 0.2993 |" in text
    assert text.rstrip().endswith("| 2700 it, 167 s |")


def test_run_row_names_the_unreadable_file(tmp_path: Path) -> None:
    folder = model_folder(tmp_path / "m", {"parameters": 1})
    (folder / "metrics.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"metrics\.json: cannot read it"):
        run_row("x", folder)


def test_spread_is_mean_and_sample_std_per_group_in_input_order() -> None:
    rows = [
        {"cell": "b", "parameters": 10, "val_acc": 0.8, "seed": 0},
        {"cell": "b", "parameters": 10, "val_acc": 0.9, "seed": 1},
        {"cell": "a", "parameters": 20, "val_acc": 0.7, "seed": 0},
    ]
    table = spread(rows, ["cell"], ["val_acc"])
    assert list(table["cell"]) == ["b", "a"] and list(table["n"]) == [2, 1]
    assert table.loc[0, "val_acc_mean"] == pytest.approx(0.85)
    assert table.loc[0, "val_acc_std"] == pytest.approx(math.sqrt(0.005))  # ddof=1
    text = spread_markdown(table, ["cell"], ["val_acc"])
    assert "| b | 2 | 10 | 0.850 ± 0.071 |" in text and "| a | 1 | 20 | 0.700 |" in text
    with pytest.raises(ValueError, match="test_auc"):
        spread(rows, ["cell"], ["test_auc"])


def test_aggregate_names_variant_rows_and_ignores_extra_metric_keys(tmp_path: Path) -> None:
    paths = []
    for cell, acc in (("big", 0.9), ("small", 0.8)):
        for fold in (0, 1):
            path = tmp_path / cell / f"fold{fold}" / "metrics.json"
            path.parent.mkdir(parents=True)
            # a sweep's metrics file also records its wall time
            path.write_text(json.dumps({"parameters": 5, "val_acc": acc, "seconds": 3.0 + fold}))
            paths.append(path)
    summary = summarise(collect(paths), metric="val_acc", mode="max")
    assert "seconds" not in summary.columns
    text = to_markdown(summary)
    assert text.splitlines()[0].startswith("| cell | folds | parameters | val_acc |")
    assert "| **big** | **2** |" in text and "| small | 2 |" in text
