"""scripts/sweep.py: parallel variant runs, selection by validation only, deadline, resume."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import yaml
from test_tasks import write_medmnist

ROOT = Path(__file__).resolve().parent.parent


def sweep(tmp: Path, grid: dict, *args: str) -> subprocess.CompletedProcess[str]:  # type: ignore[type-arg]
    path = tmp / "grid.yaml"
    path.write_text(yaml.safe_dump(grid))
    env = {**os.environ, "NCAFLOW_DATA_MIRROR": str(tmp / "mirror")}
    cmd = [sys.executable, str(ROOT / "scripts" / "sweep.py"), "--grid", str(path)]
    cmd += ["--out", str(tmp / "out"), "--device", "auto", *args]  # auto: evaluate resolves it too
    return subprocess.run(cmd, capture_output=True, text=True, env=env, check=False, timeout=600)


def test_sweep_selects_by_validation_and_resumes(tmp_path: Path) -> None:
    write_medmnist(tmp_path / "mirror" / "medmnist" / "breastmnist.npz", size=28)
    run = {
        "task": "classification",
        "model": {"input_channels": 1, "output_channels": 0, "hidden_channels": 4, "head": 2},
        "data": {"readout": "head", "root": str(tmp_path / "cache")},
        "train": {"iterations": 20, "batch_size": 8, "steps": [6], "eval_every": 10, "lr": 5e-3},
    }
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(run))
    grid = {
        "config": str(tmp_path / "run.yaml"),
        "seeds": [0, 1],
        "select": {"metric": "val_acc", "mode": "max", "tie": "val_auc"},
        "common": ["train.early_stopping.metric=val_auc", "train.early_stopping.mode=max"],
        "variants": {"narrow": ["model.hidden_width=8"], "wide": ["model.hidden_width=24"]},
    }
    done = sweep(tmp_path, grid, "--jobs", "2")
    assert done.returncode == 0, done.stderr
    out = tmp_path / "out"
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["variants"]) == {"narrow", "wide"}
    means = {}
    for variant in ("narrow", "wide"):
        runs = [json.loads((out / f"{variant}-s{s}" / "metrics.json").read_text()) for s in (0, 1)]
        assert {"val_acc", "val_auc", "test_acc", "test_auc"} <= set(runs[0])
        means[variant] = (
            statistics.fmean(r["val_acc"] for r in runs),
            statistics.fmean(r["val_auc"] for r in runs),
        )
        assert summary["variants"][variant]["runs"] == 2
        assert summary["variants"][variant]["mean"]["val_acc"] == means[variant][0]
    assert summary["selected"] == max(means, key=lambda v: means[v])  # validation only
    assert f"{summary['selected']} (selected)" in (out / "summary.md").read_text()

    # finished runs are not trained again; a new variant cut off by the deadline is left out
    grid["variants"]["late"] = ["model.hidden_width=16"]
    again = sweep(tmp_path, grid, "--jobs", "2", "--deadline", "0.01")
    assert again.returncode == 0, again.stderr
    summary2 = json.loads((out / "summary.json").read_text())
    assert summary2["variants"] == summary["variants"]
    assert all("error" in r for r in summary2["runs"]["late"])
    assert (
        "Not in the table (not run, or interrupted): late-s0, late-s1."
        in (out / "summary.md").read_text()
    )
    rebuilt = sweep(tmp_path, grid, "--summarise-only")
    assert rebuilt.returncode == 0, rebuilt.stderr
    summary3 = json.loads((out / "summary.json").read_text())
    assert (summary3["variants"], summary3["selected"]) == (
        summary["variants"],
        summary["selected"],
    )
