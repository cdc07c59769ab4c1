"""The reference results as workflow targets (config/paper.yaml, key `reference`):
dry runs of the named targets from an empty results/ folder, and the config errors of
named variants and of the reference section (marker: workflow)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from test_workflow import copy_workflow, job_counts, snakemake

pytestmark = pytest.mark.workflow

REPO = Path(__file__).resolve().parents[2]
PAPER = yaml.safe_load((REPO / "config" / "paper.yaml").read_text())


def folds_of(task: str) -> dict[str, int]:
    """Variant (cell) -> number of folds of one task of paper.yaml."""
    spec = PAPER["tasks"][task]
    own = spec.get("variant_folds", {})
    return {v: own.get(v, spec["folds"]) for v in spec.get("variants", {"base": {}})}


def expected_jobs() -> dict[str, int]:
    ref = PAPER["reference"]
    tasks = list(dict.fromkeys(ref["runs"] + ref["sweeps"]))
    trainings = sum(sum(folds_of(t).values()) for t in tasks)
    evaluations = sum(
        folds_of(task)[cell] * len(spec["evaluations"])
        for task, spec in ref["rollouts"].items()
        for cell in spec["cells"]
    )
    ensembles = sum(len(e["seeds"]) for e in ref["ensembles"].values())
    return {
        "train": trainings,
        "evaluate": trainings,
        "evaluate_with": evaluations,
        "ensemble": ensembles,
        "aggregate": len(tasks),
        "plot": len(tasks),
        "reference_runs": 1,
        "reference_rollouts": 1,
        "reference_ensembles": 1,
    }


def test_reference_target_plans_every_run_evaluation_and_ensemble(tmp_path: Path) -> None:
    root = copy_workflow(tmp_path)
    out = snakemake(
        root, "reference", "-n", "--quiet", "rules", "--configfile", "config/paper.yaml"
    ).stdout
    counts = job_counts(out)
    expected = expected_jobs()
    assert {k: counts.get(k, 0) for k in expected} == expected, out
    assert expected["train"] == 29 and expected["evaluate_with"] == 27  # the README's runs
    assert expected["ensemble"] == 7
    # GPU training jobs: the paper config's resources reach them
    assert PAPER["resources"]["train"]["gpu"] == 1


def test_reference_evaluations_are_evaluate_overrides_and_ensembles(tmp_path: Path) -> None:
    root = copy_workflow(tmp_path)
    out = snakemake(
        root,
        "results/models/sweep_breastmnist_long/ensembles/big_long_6k_s0s1/seed2.json",
        "results/models/sweep_breastmnist/big_long/fold2/metrics-r16_hflip.json",
        "-n",
        "-p",
        "--configfile",
        "config/paper.yaml",
    ).stdout
    fold = "results/models/sweep_breastmnist_long/big_long_6k/fold"
    assert f"--model {fold}0/model.safetensors --model {fold}1/model.safetensors" in out
    assert "--set data.eval_hflip=true --set data.eval_rollouts=16" in out
    assert "--seed 2" in out
    # the member models are trained with their seeds: fold k of a seed task = train.seed=k
    assert "--set train.seed=1" in out and "--set model.hidden_channels=48" in out


def test_default_config_has_no_reference_jobs(tmp_path: Path) -> None:
    root = copy_workflow(tmp_path)
    counts = job_counts(snakemake(root, "reference", "-n", "--quiet", "rules").stdout)
    assert counts == {"reference": 1}


def _paper_with(tmp_path: Path, edit: Any) -> Path:
    root = copy_workflow(tmp_path)
    config = yaml.safe_load((root / "config/paper.yaml").read_text())
    edit(config)
    (root / "config/bad.yaml").write_text(yaml.safe_dump(config))
    return root


def _grid_too(c: dict[str, Any]) -> None:
    c["tasks"]["sweep_breastmnist"]["grid"] = {"lr": {"key": "train.lr", "values": [0.001]}}


def _folds_of_unknown(c: dict[str, Any]) -> None:
    c["tasks"]["sweep_breastmnist"]["variant_folds"]["bigg"] = 2


def _bad_override(c: dict[str, Any]) -> None:
    c["tasks"]["sweep_breastmnist"]["variants"]["big"]["model.hiden_channels"] = 3


def _unknown_cell(c: dict[str, Any]) -> None:
    c["reference"]["rollouts"]["sweep_breastmnist"]["cells"] = ["bigg"]


def _unknown_evaluation(c: dict[str, Any]) -> None:
    c["reference"]["ensembles"]["big_long_s0s1"]["evaluation"] = "r32"


def _fold_out_of_range(c: dict[str, Any]) -> None:
    c["reference"]["ensembles"]["big_long_s0s1"]["members"] = ["big/fold0", "big/fold2"]


def _unknown_run(c: dict[str, Any]) -> None:
    c["reference"]["runs"].append("ref_kvasir")


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (_grid_too, ["tasks.sweep_breastmnist", "either 'grid' or 'variants'"]),
        (_folds_of_unknown, ["tasks.sweep_breastmnist.variant_folds", "bigg"]),
        (_bad_override, ["tasks.sweep_breastmnist.grid (big)", "hiden_channels"]),
        (_unknown_cell, ["reference.rollouts.sweep_breastmnist.cells", "'bigg'"]),
        (_unknown_evaluation, ["reference.ensembles.big_long_s0s1.evaluation", "r16_hflip"]),
        (_fold_out_of_range, ["reference.ensembles.big_long_s0s1.members", "big/fold2"]),
        (_unknown_run, ["reference.runs[4]", "'ref_kvasir'"]),
    ],
)
def test_bad_reference_config_stops_with_the_key(
    tmp_path: Path, edit: Any, expected: list[str]
) -> None:
    root = _paper_with(tmp_path, edit)
    proc = snakemake(root, "reference", "-n", "--configfile", "config/bad.yaml", check=False)
    assert proc.returncode != 0
    text = proc.stdout + proc.stderr
    for needle in expected:
        assert needle in text, text[-2000:]
    assert "Traceback" not in text
