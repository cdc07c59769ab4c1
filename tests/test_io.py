"""Save/load round trips and damaged files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from ncaflow.cascade import build_model
from ncaflow.config import RunConfig, from_dict
from ncaflow.io import ModelFileError, load, save


def config(**extra: object) -> RunConfig:
    raw = {
        "task": "segmentation",
        "model": {
            "input_channels": 3,
            "output_channels": 1,
            "hidden_channels": 4,
            "hidden_width": 16,
            "perception": "learned",
            "padding": "reflect",
            "head": 2,
        },
        **extra,
    }
    return from_dict(RunConfig, raw)


@pytest.mark.parametrize("cascade", [None, {"scales": [2, 1], "steps": [2, 2]}])
def test_round_trip_gives_identical_outputs(tmp_path: Path, cascade: dict | None) -> None:
    cfg = config(cascade=cascade)
    torch.manual_seed(0)
    model = build_model(cfg)
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.1)
    save(model, cfg, tmp_path / "m" / "model.safetensors", meta={"labels": ["a", "b"]})
    loaded = load(tmp_path / "m")
    assert loaded.run_config == cfg
    assert loaded.meta == {"labels": ["a", "b"]}
    x = torch.rand(2, cfg.model.channels, 8, 8)
    a = model(x, 4, generator=torch.Generator().manual_seed(1))
    b = loaded(x, 4, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b)
    assert type(loaded) is type(model)  # a cascade comes back as a cascade


def test_truncated_weights_are_reported(tmp_path: Path) -> None:
    cfg = config()
    path = save(build_model(cfg), cfg, tmp_path / "model.safetensors")
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(ModelFileError, match="truncated or from another run"):
        load(path)
    doc = json.loads(path.with_suffix(".json").read_text())
    del doc["weights_sha256"]
    path.with_suffix(".json").write_text(json.dumps(doc))
    with pytest.raises(ModelFileError, match="cannot read weights"):
        load(path)


def test_mismatched_config_is_reported(tmp_path: Path) -> None:
    cfg = config()
    path = save(build_model(cfg), cfg, tmp_path / "model.safetensors")
    doc = json.loads(path.with_suffix(".json").read_text())
    doc["config"]["model"]["hidden_width"] = 32
    del doc["weights_sha256"]
    path.with_suffix(".json").write_text(json.dumps(doc))
    with pytest.raises(ModelFileError, match="do not fit the config"):
        load(path)


def test_missing_or_foreign_json(tmp_path: Path) -> None:
    cfg = config()
    path = save(build_model(cfg), cfg, tmp_path / "model.safetensors")
    path.with_suffix(".json").write_text("{not json")
    with pytest.raises(ModelFileError, match="not valid JSON"):
        load(path)
    path.with_suffix(".json").write_text('{"format": "other"}')
    with pytest.raises(ModelFileError, match="not an ncaflow model"):
        load(path)
    path.with_suffix(".json").unlink()
    with pytest.raises(ModelFileError, match="missing"):
        load(path)


def test_save_leaves_no_temp_files(tmp_path: Path) -> None:
    cfg = config()
    save(build_model(cfg), cfg, tmp_path / "model.safetensors")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.json", "model.safetensors"]
