"""Bad-input corpus: damaged, edited or inconsistent model files (issue 21).

Every damage is fed to every command that reads a model (``check``, ``evaluate``,
``predict``, ``info``); each must fail with one line naming the file at fault, exit
non-zero and write nothing. "Resealed" damages recompute the SHA-256 and the digest, so
the file is consistent and only its content is wrong (a buggy writer, a hand-made file).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from ncaflow.cascade import build_model
from ncaflow.config import RunConfig, from_dict
from ncaflow.io import json_digest, save, sha256

WEIGHTS, JSON = "model.safetensors", "model.json"
RAW = {
    "task": "classification",
    "model": {"input_channels": 1, "output_channels": 0, "hidden_channels": 4, "hidden_width": 8,
              "head": 2},
    "train": {"steps": [2]},
    "data": {"flag": "breastmnist", "readout": "head"},
}  # fmt: skip


def saved(folder: Path, seed: int = 0) -> Path:
    cfg = from_dict(RunConfig, RAW)
    torch.manual_seed(seed)
    model = build_model(cfg)
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.3)
    save(model, cfg, folder / WEIGHTS)
    return folder


def edit(folder: Path, change: Callable[[dict], object], *, reseal: bool = False) -> None:
    doc = json.loads((folder / JSON).read_text())
    change(doc)
    if reseal:
        doc["weights_sha256"] = sha256(folder / WEIGHTS)
        doc["digest"] = json_digest(doc)
    (folder / JSON).write_text(json.dumps(doc))


def tensors(folder: Path, change: Callable[[dict[str, torch.Tensor]], object]) -> None:
    state = load_file(str(folder / WEIGHTS))
    change(state)
    save_file(state, str(folder / WEIGHTS))
    edit(folder, lambda d: None, reseal=True)


def first(state: dict[str, torch.Tensor]) -> torch.Tensor:
    return state[sorted(state)[0]].view(-1)


def swap(folder: Path) -> None:
    other = saved(folder.parent / "other", seed=1)
    (folder / WEIGHTS).write_bytes((other / WEIGHTS).read_bytes())


def garbage(folder: Path) -> None:
    (folder / WEIGHTS).write_bytes(b"\0" * 64)
    edit(folder, lambda d: None, reseal=True)


def set_version(version: object) -> Callable[[dict], object]:
    return lambda d: d.update(format_version=version)


# damage id -> (damage, file named in the message, words of the reason)
DAMAGES: dict[str, tuple[Callable[[Path], object], str, str]] = {
    "json-without-digest": (lambda f: edit(f, lambda d: d.pop("digest")), JSON, "'digest'"),
    "json-data-root-edited": (
        lambda f: edit(f, lambda d: d["config"]["data"].update(root="/tmp/elsewhere")),
        JSON,
        "does not match",
    ),
    "json-meta-edited": (lambda f: edit(f, lambda d: d["meta"].update(x=1)), JSON, "edited"),
    "json-without-weights-sha256": (
        lambda f: edit(f, lambda d: d.pop("weights_sha256")),
        JSON,
        "'weights_sha256'",
    ),
    "json-missing": (lambda f: (f / JSON).unlink(), JSON, "missing"),
    "json-not-json": (lambda f: (f / JSON).write_text("{not json"), JSON, "not valid JSON"),
    "json-a-list": (lambda f: (f / JSON).write_text("[1, 2]"), JSON, "not an ncaflow model"),
    "json-wrong-format": (
        lambda f: edit(f, lambda d: d.update(format="other")),
        JSON,
        "not an ncaflow model",
    ),
    "json-newer-version": (lambda f: edit(f, set_version(3)), JSON, "newer ncaflow"),
    "json-version-a-string": (lambda f: edit(f, set_version("2")), JSON, "'format_version'"),
    "json-invalid-config": (
        lambda f: edit(f, lambda d: d["config"]["model"].update(fire_rate=2), reseal=True),
        JSON,
        "model.fire_rate",
    ),
    "json-unknown-config-key": (
        lambda f: edit(f, lambda d: d["config"].update(extra=1), reseal=True),
        JSON,
        "config.extra",
    ),
    "weights-swapped": (swap, WEIGHTS, "SHA-256 differs"),
    "weights-truncated": (
        lambda f: (f / WEIGHTS).write_bytes((f / WEIGHTS).read_bytes()[:-9]),
        WEIGHTS,
        "SHA-256 differs",
    ),
    "weights-zero-bytes": (lambda f: (f / WEIGHTS).write_bytes(b""), WEIGHTS, "SHA-256 differs"),
    "weights-missing": (lambda f: (f / WEIGHTS).unlink(), WEIGHTS, "missing"),
    "weights-garbage-resealed": (
        lambda f: garbage(f),
        WEIGHTS,
        "cannot read weights",
    ),
    "weights-wrong-shape": (
        lambda f: tensors(f, lambda s: s.update({sorted(s)[0]: torch.zeros(3, 3)})),
        WEIGHTS,
        "the config in its .json builds",
    ),
    "weights-unknown-key": (
        lambda f: tensors(f, lambda s: s.update(extra=torch.zeros(1))),
        WEIGHTS,
        "unknown tensor 'extra'",
    ),
    "weights-missing-key": (
        lambda f: tensors(f, lambda s: s.pop(sorted(s)[0])),
        WEIGHTS,
        "missing tensor",
    ),
    "weights-float64": (
        lambda f: tensors(f, lambda s: s.update({k: v.double() for k, v in s.items()})),
        WEIGHTS,
        "float64",
    ),
    "weights-nan": (
        lambda f: tensors(f, lambda s: first(s).__setitem__(0, float("nan"))),
        WEIGHTS,
        "NaN or Inf",
    ),
    "weights-inf": (
        lambda f: tensors(f, lambda s: first(s).__setitem__(-1, float("-inf"))),
        WEIGHTS,
        "NaN or Inf",
    ),
}

COMMANDS = ["check", "evaluate", "predict", "info"]


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("damage", sorted(DAMAGES))
def test_damaged_model_is_refused(
    cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, damage: str, command: str
) -> None:
    monkeypatch.chdir(tmp_path)  # should a command get as far as its data: not in the repo
    damage_fn, named, reason = DAMAGES[damage]
    folder = saved(tmp_path / "model")
    damage_fn(folder)
    image = tmp_path / "x.png"
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(image)
    out = tmp_path / "result" / "out.json"
    argv = {
        "check": ["check", folder],
        "evaluate": ["evaluate", "--model", folder, "--split", "test", "--out", out],
        "predict": ["predict", "--model", folder, image, "--out", out],
        "info": ["info", folder],
    }[command]
    outcome = cli(*argv)
    outcome.fails_cleanly(f"ncaflow {command}: ", str(folder / named), reason, absent=[out])
    if command == "check":
        assert "0 of 1 models intact" in outcome.out
    else:
        assert outcome.out == ""


def test_check_names_each_damaged_model_and_passes_the_intact_ones(cli, tmp_path: Path) -> None:
    good = saved(tmp_path / "a")
    bad = saved(tmp_path / "b")
    DAMAGES["weights-nan"][0](bad)
    outcome = cli("check", tmp_path)
    outcome.fails_cleanly(str(bad / WEIGHTS), "NaN or Inf")
    assert "1 of 2 models intact" in outcome.out
    assert str(good) not in outcome.err
    assert cli("check", good).code == 0


def test_a_models_data_root_is_ignored_and_named(
    cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mirror: Path
) -> None:
    """A model whose data.root points elsewhere: evaluate caches in data/raw here and says
    in one line what it ignored; --set data.root chooses another folder (issue 26)."""
    monkeypatch.chdir(tmp_path)
    folder = saved(tmp_path / "model")
    elsewhere = tmp_path / "elsewhere"
    edit(folder, lambda d: d["config"]["data"].update(root=str(elsewhere)), reseal=True)
    small = ["--split", "test", "--set", "data.eval_batch=16", "--set", f"data.mirror={mirror}"]
    outcome = cli("evaluate", "--model", folder, *small)
    assert outcome.code == 0, outcome.err
    assert outcome.err.startswith(
        f"ncaflow evaluate: warning: ignored data.root={elsewhere} stored in this model file"
    )
    assert len(outcome.err.splitlines()) == 1
    assert not elsewhere.exists()
    assert (tmp_path / "data" / "raw" / "breastmnist.npz").is_file()
    chosen = tmp_path / "chosen"
    outcome = cli("evaluate", "--model", folder, *small, "--set", f"data.root={chosen}")
    assert outcome.code == 0 and outcome.err == ""
    assert (chosen / "breastmnist.npz").is_file()
    assert not elsewhere.exists()
