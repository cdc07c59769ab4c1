"""Loading a run config: strict keys, types, overrides, what the task derives, and
errors that name file and key."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from ncaflow.config import (
    ConfigError,
    RunConfig,
    from_dict,
    to_dict,
)
from ncaflow.tasks.runconfig import build_config, load_config

REPO = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "run.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("name", ["growing", "selfclass", "breastmnist", "kvasir"])
def test_shipped_run_configs_load(name: str) -> None:
    cfg = load_config(REPO / "config" / "runs" / f"{name}.yaml")
    assert from_dict(RunConfig, to_dict(cfg)) == cfg


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("task: growing\nmodel: {hiden_channels: 3}\n", "unknown key 'model.hiden_channels'"),
        ("task: growing\nmodel: {fire_rate: fast}\n", "key 'model.fire_rate': expected a number"),
        (
            "task: growing\nmodel: {fire_rate: 1.5}\n",
            "key 'model.fire_rate': 1.5 is not allowed; give a number in (0, 1]",
        ),
        (
            "task: growing\nmodel: {padding: mirror}\n",
            "key 'model.padding': 'mirror' is not one of",
        ),
        ("task: growing\ntrain: {steps: [9, 3]}\n", "key 'train.steps'"),
        ("task: growing\ndata: {pool: 3}\n", "unknown key 'data.pool'"),
        ("task: growin\n", "unknown task"),
        ("model: {}\n", "missing required key 'task'"),
        (
            "task: growing\ntrain: {iterations: 1.5}\n",
            "key 'train.iterations': expected an integer",
        ),
        ("task: [oops\n", "not valid YAML"),
    ],
)
def test_bad_configs_name_file_and_key(tmp_path: Path, text: str, needle: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(path) in str(err.value)
    assert needle in str(err.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")


def test_overrides_apply_and_are_validated(tmp_path: Path) -> None:
    path = write(tmp_path, "task: growing\n")
    cfg = load_config(path, ["model.hidden_channels=3", "train.steps=[5, 7]", "data.size=20"])
    assert cfg.model.hidden_channels == 3
    assert cfg.train.steps == [5, 7]
    assert cfg.data["size"] == 20
    with pytest.raises(ConfigError, match=r"model\.nope"):
        load_config(path, ["model.nope=1"])


def test_medmnist_channels_and_classes_come_from_info() -> None:
    raw = {"task": "classification", "data": {"flag": "dermamnist", "readout": "head"}}
    cfg = build_config(raw, ["model.output_channels=0"])
    assert (cfg.model.input_channels, cfg.model.head) == (3, 7)
    assert "model" not in raw  # the caller's mapping is left alone
    vote = build_config({"task": "classification", "data": {"flag": "organamnist"}})
    assert (vote.model.input_channels, vote.model.output_channels) == (1, 11)
    with pytest.raises(ConfigError, match=r"'model\.head': 2 contradicts .* bloodmnist \(8 "):
        build_config(raw, ["data.flag=bloodmnist", "model.head=2"])


def test_paper_medmnist_subsets_build() -> None:
    """config/paper.yaml's subsets on config/runs/breastmnist.yaml, as the workflow builds
    them (INFO's keys first, then the flag)."""
    from ncaflow.tasks.classification import info_keys

    base = yaml.safe_load((REPO / "config/runs/breastmnist.yaml").read_text())
    for flag in ("breastmnist", "pneumoniamnist", "dermamnist", "bloodmnist", "pathmnist"):
        keys = [f"{k}={v}" for k, v in info_keys(flag, "head").items()]
        cfg = build_config(base, [*keys, f"data.flag={flag}"])
        assert cfg.model.head == {"dermamnist": 7, "bloodmnist": 8, "pathmnist": 9}.get(flag, 2)
