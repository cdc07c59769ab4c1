"""The Task interface: what every task declares is what its evaluation reports."""

from __future__ import annotations

import pytest
from committed import committed_text

from ncaflow.tasks import get_task
from ncaflow.tasks.base import Predicts

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def test_every_task_declares_headline_metrics_its_evaluation_reports() -> None:
    """Task.headline (the reference-runs table's columns) names metrics the task's evaluation
    really writes: the main job's aggregate tables, one per task, carry each as a column.
    Task.predicts is "labels", "masks" or None with a reason that points elsewhere."""
    import csv

    from ncaflow.tasks import TASKS

    tables = {  # task -> the main job's aggregate table of a model of that task
        "growing": "growing.csv",
        "selfclass": "selfclass.csv",
        "classification": "breastmnist.csv",
        "segmentation": "kvasir.csv",
    }
    assert set(tables) == set(TASKS), "a new task needs a table here"
    for name, table in tables.items():
        task = get_task(name)
        columns = next(csv.reader(committed_text(f"results/tables/{table}").splitlines()))
        assert task.headline, name
        for key, label in task.headline:
            assert f"{key}_mean" in columns, (name, key)
            assert label, (name, key)
        assert task.predicts is None or isinstance(task.predicts, Predicts), name
        if task.predicts is None:
            assert "use `ncaflow" in task.predict_instead, name
