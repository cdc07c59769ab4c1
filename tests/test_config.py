"""Config loading: strict keys, types, overrides, and errors that name file and key."""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path
from typing import Any

import pytest
import yaml

from ncaflow.config import (
    POSITIVE,
    ConfigError,
    RunConfig,
    TrainConfig,
    from_dict,
    parse_override,
    range_of,
    to_dict,
)
from ncaflow.tasks import TASKS, get_task
from ncaflow.tasks.runconfig import build_config, load_config

REPO = Path(__file__).resolve().parents[1]


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


def _unranged_keys(cls: Any, where: str) -> list[str]:
    """Dotted keys of every int/float (or list or optional of them) field of a dataclass
    that has no range beside it."""
    keys = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        key = f"{where}.{f.name}" if where else f.name
        tp = hints[f.name]
        inner = [a for a in typing.get_args(tp) if a is not type(None)] or [tp]
        for t in inner:
            if dataclasses.is_dataclass(t):
                keys += _unranged_keys(t, key)
            elif t in (int, float) or typing.get_args(t) in ((int,), (float,)):
                keys += [] if "range" in f.metadata else [key]
    return keys


def test_every_numeric_key_has_a_range_beside_it() -> None:
    keys = _unranged_keys(RunConfig, "")
    for name in TASKS:
        keys += _unranged_keys(get_task(name).Data, "data")
    assert not keys, f"give these fields a range (ncaflow.config.ranged): {sorted(set(keys))}"
    assert range_of(dataclasses.fields(TrainConfig)[4]) == POSITIVE  # train.lr


def test_exponent_numbers_are_numbers(tmp_path: Path) -> None:
    path = write(tmp_path, "task: growing\ntrain: {lr: 1e-3, weight_decay: 1E-4}\n")
    cfg = load_config(path, ["train.scheduler.gamma=5e-1"])
    assert cfg.train.lr == 0.001 and cfg.train.weight_decay == 0.0001
    assert cfg.train.scheduler.gamma == 0.5
    assert parse_override("train.lr=1e4") == ("train.lr", 10000.0)
    assert parse_override("data.target=1f98e") == ("data.target", "1f98e")  # text stays text


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
