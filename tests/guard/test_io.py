"""Save/load round trips and damaged files."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from ncaflow.config import ConfigError, RunConfig, from_dict
from ncaflow.guard.io import (
    FORMAT_VERSION,
    ModelFileError,
    json_digest,
    load,
    save,
    sha256,
    upgrade,
    verify,
)
from ncaflow.model.cascade import build_model


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


def saved(tmp_path: Path) -> Path:
    cfg = config()
    torch.manual_seed(0)
    return save(build_model(cfg), cfg, tmp_path / "model.safetensors")


def reseal(weights: Path, edit: Callable[[dict], None] = lambda doc: None) -> None:
    """Edit a model's JSON and recompute its SHA-256 and digest: a consistent file whose
    content alone is wrong (what a buggy writer or a hand-made file could produce)."""
    meta = weights.with_suffix(".json")
    doc = json.loads(meta.read_text())
    edit(doc)
    doc["weights_sha256"] = sha256(weights)
    doc["digest"] = json_digest(doc)
    meta.write_text(json.dumps(doc))


def edit_json(weights: Path, edit: Callable[[dict], object]) -> None:
    meta = weights.with_suffix(".json")
    doc = json.loads(meta.read_text())
    edit(doc)
    meta.write_text(json.dumps(doc))


def test_json_carries_a_digest_over_itself_and_the_weights(tmp_path: Path) -> None:
    path = saved(tmp_path)
    doc = json.loads(path.with_suffix(".json").read_text())
    assert doc["format_version"] == FORMAT_VERSION == 2
    assert doc["weights_sha256"] == sha256(path)
    assert doc["digest"] == json_digest(doc)
    assert verify(path).format_version == 2


def test_truncated_or_swapped_weights_are_reported(tmp_path: Path) -> None:
    path = saved(tmp_path)
    good = path.read_bytes()
    path.write_bytes(good[:-10])
    with pytest.raises(ModelFileError, match="SHA-256 differs"):
        load(path)
    cfg = config()
    torch.manual_seed(1)  # same shapes, other values: another run's weights
    other = save(build_model(cfg), cfg, tmp_path / "other" / "model.safetensors")
    path.write_bytes(other.read_bytes())
    with pytest.raises(ModelFileError, match="SHA-256 differs"):
        load(path)
    path.write_bytes(good)
    load(path)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d["config"]["data"].update(root="/elsewhere"), "key 'digest': does not match"),
        (lambda d: d.pop("digest"), "key 'digest': missing"),
        (lambda d: d.pop("weights_sha256"), "key 'weights_sha256': missing"),
        (lambda d: d.update(format_version=3), "newer ncaflow"),
        (lambda d: d.update(format_version="2"), "key 'format_version'"),
        (lambda d: d.update(format="other"), "not an ncaflow model"),
    ],
)
def test_edited_json_is_refused(tmp_path: Path, edit: Callable[[dict], None], message: str) -> None:
    path = saved(tmp_path)
    edit_json(path, edit)
    with pytest.raises(ModelFileError, match=message):
        verify(path)
    with pytest.raises(ModelFileError, match=message):
        load(path)


def test_version_1_files_are_refused_but_upgraded(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A JSON that claims version 1 (no digest) is refused by load and check, so that an
    edit cannot skip the digest that way; `ncaflow check --upgrade` rewrites an intact one
    as version 2 (digest added, the weights and every other value unchanged)."""
    from ncaflow.cli import main

    path = saved(tmp_path / "m")
    edit_json(path, lambda d: d.update(format_version=1) or d.pop("digest"))
    before = json.loads((tmp_path / "m" / "model.json").read_text())
    weights = (tmp_path / "m" / "model.safetensors").read_bytes()
    for read in (load, verify):
        with pytest.raises(ModelFileError, match="is no longer read"):
            read(path)
    assert main(["check", str(tmp_path)]) == 1
    assert main(["check", "--upgrade", str(tmp_path)]) == 0
    assert "1 of 1 models intact (1 rewritten from format version 1)" in capsys.readouterr().out
    after = json.loads((tmp_path / "m" / "model.json").read_text())
    assert after.pop("digest") == json_digest(after)
    assert after == {**before, "format_version": 2}
    assert (tmp_path / "m" / "model.safetensors").read_bytes() == weights
    assert upgrade(path) is False  # already current
    load(path)
    edit_json(path, lambda d: d.update(format_version=1) or d.pop("digest"))
    edit_json(path, lambda d: d.pop("weights_sha256"))
    with pytest.raises(ModelFileError, match="key 'weights_sha256': missing"):
        upgrade(path)


def test_mismatched_config_is_reported(tmp_path: Path) -> None:
    path = saved(tmp_path)
    reseal(path, lambda d: d["config"]["model"].update(hidden_width=32))
    with pytest.raises(ModelFileError, match=r"the config in its \.json builds"):
        load(path)


def test_invalid_config_in_a_consistent_file_is_reported(tmp_path: Path) -> None:
    path = saved(tmp_path)
    reseal(path, lambda d: d["config"]["model"].update(fire_rate=2.0))
    with pytest.raises(ModelFileError, match=r"model.json: key 'model.fire_rate'"):
        load(path)


def rewrite_tensors(path: Path, change: Callable[[dict[str, torch.Tensor]], None]) -> None:
    state = load_file(str(path))
    change(state)
    save_file(state, str(path))
    reseal(path)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda s: s.update(extra=torch.zeros(1)), "unknown tensor 'extra'"),
        (lambda s: s.pop(sorted(s)[0]), "missing tensor"),
        (lambda s: s.update({k: v.double() for k, v in s.items()}), "float64"),
        (lambda s: next(iter(s.values())).view(-1).__setitem__(0, float("nan")), "NaN or Inf"),
        (lambda s: next(iter(s.values())).view(-1).__setitem__(0, float("inf")), "NaN or Inf"),
    ],
)
def test_tensors_must_be_those_the_config_builds(
    tmp_path: Path, change: Callable[[dict[str, torch.Tensor]], None], message: str
) -> None:
    path = saved(tmp_path)
    rewrite_tensors(path, change)
    with pytest.raises(ModelFileError, match=message):
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


def test_mlp_head_round_trips_through_the_model_files(tmp_path: Path) -> None:
    """model.head_hidden: the head's two layers are saved and loaded with the model."""
    from ncaflow.guard.io import load, save
    from ncaflow.model.cascade import build_model
    from ncaflow.tasks.runconfig import build_config

    raw = {
        "task": "classification",
        "model": {"hidden_channels": 5, "output_channels": 0, "head_hidden": 6},
        "data": {"flag": "breastmnist", "readout": "head"},
    }
    cfg = build_config(raw)
    torch.manual_seed(0)
    model = build_model(cfg)
    assert [tuple(p.shape) for p in model.head.parameters()] == [(6, 5), (6,), (2, 6), (2,)]
    save(model, cfg, tmp_path / "model")
    loaded = load(tmp_path / "model")
    assert loaded.run_config.model.head_hidden == 6  # type: ignore[union-attr]
    mean = torch.randn(3, 5)
    torch.testing.assert_close(loaded.head(mean), model.head(mean))  # type: ignore[operator]
    assert isinstance(model.head[1], torch.nn.ReLU)  # between the two layers
    raw["data"] = {"flag": "breastmnist", "readout": "vote"}  # no head to give a layer
    raw["model"] = {"hidden_channels": 5, "head_hidden": 6}
    with pytest.raises(ConfigError, match=r"key 'model\.head_hidden': is the hidden layer"):
        build_config(raw)
