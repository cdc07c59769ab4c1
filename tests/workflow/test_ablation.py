"""The option ablation (config/ablation.yaml, `snakemake ablation` -> docs/ablation.md):
a dry run of the GPU config, and a tiny CPU version of it end to end (marker: workflow)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from test_workflow import copy_workflow, expected_trainings, job_counts, snakemake

pytestmark = pytest.mark.workflow

VARIANTS = ["base", "focal", "seed_noise", "hidden_penalty", "step_channel", "adaptive", "mlp_head"]


def test_ablation_config_schedules_every_variant_and_seed(tmp_path: Path) -> None:
    root = copy_workflow(tmp_path)
    config = yaml.safe_load((root / "config/ablation.yaml").read_text())
    task = config["tasks"]["ablation_breastmnist"]
    assert list(task["variants"]) == VARIANTS and task["folds"] == 3
    assert task["set"]["train.device"] == "cuda" and "train.iterations" not in task["set"]
    args = ["ablation", "-n", "--quiet", "rules", "--configfile", "config/ablation.yaml"]
    counts = job_counts(snakemake(root, *args, timeout=180).stdout)
    assert counts["train"] == sum(expected_trainings(config).values()) == 21
    assert counts["evaluate"] == 21 and counts["ablation"] == 1


TINY = ["base", "adaptive", "mlp_head"]  # the plumbing, not every option: each job costs a start-up


@pytest.mark.slow  # 7 jobs
def test_tiny_ablation_on_the_cpu_writes_docs_ablation(tmp_path: Path, mirror: Path) -> None:
    root = copy_workflow(tmp_path)
    config = yaml.safe_load((root / "config/ablation.yaml").read_text())
    task = config["tasks"]["ablation_breastmnist"]
    task["folds"] = 1
    task["set"] = {
        "train.device": "cpu",
        "model.hidden_width": 16,
        "train.iterations": 2,
        "train.batch_size": 4,
        "train.steps": [6, 8],
        "train.eval_every": 2,
        "train.checkpoint_every": 2,
        "train.log_images_every": 1000,
    }
    task["variants"] = {name: task["variants"][name] for name in TINY}
    task["variants"]["adaptive"]["model.adaptive_steps.min_steps"] = 4
    config["resources"] = {"train": {"gpu": 0}}
    (root / "config/tiny_ablation.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    args = ["ablation", "--cores", "2", "--configfile", "config/tiny_ablation.yaml"]
    snakemake(root, *args, timeout=600)
    text = (root / "docs/ablation.md").read_text()
    assert text.startswith("# Ablation of the model options")
    rows = [line for line in text.splitlines() if line.startswith("| ablation_breastmnist |")]
    assert [row.split(" | ")[1] for row in rows] == TINY
    assert (root / "results/tables/ablation.csv").is_file()
    print(text)
