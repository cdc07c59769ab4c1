"""workflow/profiles/gpu on the tiny config: packed training jobs give the same models.

Two training jobs of the tiny config run alone (default settings), then again through the
GPU profile with two slots on one fake GPU (CUDA_VISIBLE_DEVICES=fake0): both jobs claim a
slot of that device, and their models are byte for byte those trained alone. Then the same
with `fold_jobs: together`: one job trains both folds in one process, pinned the same way
(its rule takes the profile's `set-resources` of `train`), and gives the same bytes.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from test_workflow import copy_workflow, snakemake

pytestmark = pytest.mark.workflow

MODELS = [f"results/models/growing/hidden~8/fold{k}/model.safetensors" for k in (0, 1)]


def test_packed_training_equals_training_alone(
    tmp_path: Path, mirror: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = copy_workflow(tmp_path / "wf")
    monkeypatch.setenv("NCAFLOW_COMPILE", "0")
    snakemake(
        root, *MODELS, "--cores", "2", "--configfile", ".test/config/config.yaml", timeout=600
    )
    alone = [(root / m).read_bytes() for m in MODELS]

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "fake0")
    monkeypatch.setenv("NCAFLOW_JOBS_PER_GPU", "2")
    snakemake(
        root, *MODELS, "--profile", "workflow/profiles/gpu", "--cores", "2",
        "--configfile", ".test/config/config.yaml", "--forcerun", "train", timeout=600,
    )  # fmt: skip
    logs = sorted((root / "results/logs/train/growing/hidden~8").glob("fold*.log"))
    slots = sorted(
        line for log in logs for line in log.read_text().splitlines() if "gpuslots" in line
    )
    assert len(slots) == 2, slots  # each job claimed a slot of the fake GPU
    assert all(s.endswith("CUDA_VISIBLE_DEVICES=fake0") for s in slots), slots
    assert [(root / m).read_bytes() for m in MODELS] == alone
    assert (root / ".snakemake" / "compile-cache").is_dir()
    assert os.listdir(root / ".snakemake" / "gpu-slots")

    for m in MODELS:
        (root / m).unlink()
    snakemake(
        root, *MODELS, "--profile", "workflow/profiles/gpu", "--cores", "2",
        "--configfile", ".test/config/config.yaml", "--config", "fold_jobs=together",
        timeout=600,
    )  # fmt: skip
    log = (root / "results/logs/train/growing/hidden~8/folds.log").read_text()
    assert log.count("trained growing") == 2, log  # both folds, one process
    assert next(line for line in log.splitlines() if "gpuslots" in line).endswith("=fake0")
    assert [(root / m).read_bytes() for m in MODELS] == alone
