"""Reading configs: YAML 1.2 exponent numbers are numbers."""

from __future__ import annotations

from pathlib import Path

from ncaflow.config import (
    parse_override,
)
from ncaflow.tasks.runconfig import load_config


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "run.yaml"
    path.write_text(text)
    return path


def test_exponent_numbers_are_numbers(tmp_path: Path) -> None:
    path = write(tmp_path, "task: growing\ntrain: {lr: 1e-3, weight_decay: 1E-4}\n")
    cfg = load_config(path, ["train.scheduler.gamma=5e-1"])
    assert cfg.train.lr == 0.001 and cfg.train.weight_decay == 0.0001
    assert cfg.train.scheduler.gamma == 0.5
    assert parse_override("train.lr=1e4") == ("train.lr", 10000.0)
    assert parse_override("data.target=1f98e") == ("data.target", "1f98e")  # text stays text
