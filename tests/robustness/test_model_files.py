"""Bad-input corpus: damaged, edited or inconsistent model files (issue 21).

Every damage is fed to every command that reads a model (``check``, ``evaluate``,
``predict``, ``info``); each must fail with one line naming the file at fault, exit
non-zero and write nothing. "Resealed" damages recompute the SHA-256 and the digest, so
the file is consistent and only its content is wrong (a buggy writer, a hand-made file).
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from ncaflow.config import RunConfig, from_dict
from ncaflow.data.sources import md5sum
from ncaflow.guard.io import json_digest, save, sha256
from ncaflow.model.cascade import build_model

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
    assert sum("data.root" in line for line in outcome.err.splitlines()) == 1
    assert not elsewhere.exists()
    assert (tmp_path / "data" / "raw" / "breastmnist.npz").is_file()
    chosen = tmp_path / "chosen"
    outcome = cli("evaluate", "--model", folder, *small, "--set", f"data.root={chosen}")
    assert outcome.code == 0 and "ignored" not in outcome.err
    assert (chosen / "breastmnist.npz").is_file()
    assert not elsewhere.exists()


# -- issue 26: a model file is data; it chooses no path, URL or folder, and no size ----------

GROWING = {"task": "growing", "model": {"hidden_channels": 4, "hidden_width": 8}}


class _Listener:
    """A TCP server on 127.0.0.1 that counts the connections it is offered."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.connections += 1
            conn.close()

    def close(self) -> int:
        self._stop.set()
        self._thread.join()
        self.sock.close()
        return self.connections


def _growing(folder: Path) -> Path:
    cfg = from_dict(RunConfig, GROWING)
    save(build_model(cfg), cfg, folder / WEIGHTS, meta={"target_shape": [4, 72, 72]})
    return folder


def _evil_mirror(root: Path) -> Path:
    """A mirror folder whose breastmnist.npz is not the real one."""
    (root / "medmnist").mkdir(parents=True)
    rng = np.random.default_rng(0)
    arrays = {}
    for split in ("train", "val", "test"):
        arrays[f"{split}_images"] = rng.integers(0, 256, (4, 28, 28), dtype=np.uint8)
        arrays[f"{split}_labels"] = np.array([[0], [1], [0], [1]], np.uint8)
    np.savez(root / "medmnist" / "breastmnist.npz", **arrays)
    return root


ROLLOUTS = {  # command -> its arguments after --model M (small and fast)
    "evaluate": ["--split", "test", "--set", "data.eval_batch=64"],
    "animate": ["--out", "out.gif", "--steps", "2"],
    "uncertainty": ["--out", "out.png", "--steps", "2", "--rollouts", "2", "--examples", "1"],
}
# stored key -> (value with {tmp} and {port}, rc: 0 ignored with a warning / 1 refused)
STORED = {
    "root-two-up": ("root", "../../X", 0),
    "root-absolute": ("root", "{tmp}/X", 0),
    "root-tilde": ("root", "~/x", 0),
    "mirror-elsewhere": ("mirror", "{tmp}/evil", 0),
    "folds-absolute": ("folds", "{tmp}/evil/folds.json", 1),
    "target-local-file": ("target", "{tmp}/evil/lizard.png", 1),
    "target-url": ("target", "http://127.0.0.1:{port}/evil.png", 1),
}


@pytest.mark.parametrize("command", sorted(ROLLOUTS))
@pytest.mark.parametrize("case", sorted(STORED))
def test_a_model_file_chooses_no_data_path_or_url(
    cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mirror: Path, case: str, command: str
) -> None:
    """An edited, re-digested model.json naming a data root, mirror, folds file or target:
    roots and mirrors are ignored (one warning line names them), files to read are refused
    (one line), and nothing is written, copied or fetched where the file says."""
    key, template, code = STORED[case]
    work = tmp_path / "a" / "b"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("NCAFLOW_DATA_MIRROR", str(mirror))
    evil = _evil_mirror(tmp_path / "evil")
    Image.new("RGBA", (8, 8), (255, 0, 0, 255)).save(evil / "lizard.png")
    (evil / "folds.json").write_text("{}")
    listener = _Listener()
    value = template.format(tmp=tmp_path, port=listener.port)
    folder = _growing(tmp_path / "model") if key == "target" else saved(tmp_path / "model")
    edit(folder, lambda d: d["config"]["data"].update({key: value}), reseal=True)
    outcome = cli(command, "--model", folder, *ROLLOUTS[command])
    assert listener.close() == 0, "the model file made ncaflow open a connection"
    assert not (tmp_path / "X").exists() and not (work / "~").exists()
    assert not (tmp_path / "home" / "x").exists()  # `~/x` expanded
    if code:
        outcome.fails_cleanly(f"data.{key}: this model file names", f"--set data.{key}=")
        assert not (work / "out.gif").exists() and not (work / "out.png").exists()
        return
    assert outcome.code == 0, outcome.err
    named = [line for line in outcome.err.splitlines() if f"data.{key}=" in line]
    assert len(named) == 1 and "ignored" in named[0], outcome.err
    cached = work / "data" / "raw" / "breastmnist.npz"
    assert md5sum(cached) == md5sum(mirror / "medmnist" / "breastmnist.npz")


def _nested(folder: Path) -> None:
    (folder / JSON).write_text('{"a":' * 100_000 + "1" + "}" * 100_000)


def _config(key: str, value: object) -> Callable[[Path], object]:
    section, name = key.split(".")
    return lambda f: edit(f, lambda d: d["config"][section].update({name: value}), reseal=True)


SIZES: dict[str, tuple[Callable[[Path], object], str, str]] = {
    "json-eval-batch-huge": (_config("data.eval_batch", 10**9), JSON, "'data.eval_batch'"),
    "json-train-steps-huge": (_config("train.steps", [10**9]), JSON, "'train.steps'"),
    "json-hidden-width-huge": (_config("model.hidden_width", 10**9), JSON, "'model.hidden_width'"),
    "json-hidden-channels-huge": (
        _config("model.hidden_channels", 100_000),
        JSON,
        "'model.hidden_channels'",
    ),
    "json-meta-size-huge": (
        lambda f: edit(f, lambda d: d["meta"].update(size=100_000), reseal=True),
        JSON,
        "grid size",
    ),
    "json-meta-size-not-a-number": (
        lambda f: edit(f, lambda d: d["meta"].update(size="big"), reseal=True),
        JSON,
        "grid size",
    ),
    "json-nested-deeply": (_nested, JSON, "nested too deeply"),
}


@pytest.mark.parametrize("command", [*COMMANDS, "export"])
@pytest.mark.parametrize("damage", sorted(SIZES))
def test_a_size_in_a_model_file_is_checked_before_allocation(
    cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, damage: str, command: str
) -> None:
    monkeypatch.chdir(tmp_path)
    damage_fn, named, reason = SIZES[damage]
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
        "export": ["export", "c", folder, "--out", out.with_suffix(".h")],
    }[command]
    outcome = cli(*argv)
    outcome.fails_cleanly(str(folder / named), reason, absent=[out, out.with_suffix(".h")])


@pytest.mark.parametrize(
    ("section", "key", "value", "needle"),
    [
        ("meta", "target_shape", [4, 10**6, 10**6], "key 'meta'"),
        ("config.data", "size", 100_000, "'data.size'"),
    ],
    ids=["meta-target-shape", "data-size"],
)
def test_a_huge_grid_in_a_growing_model_is_refused_before_allocation(
    cli, tmp_path: Path, section: str, key: str, value: object, needle: str
) -> None:
    """A growing model whose file gives a 10**6-cell side (raw allocator text, or minutes
    of work before): `export` and `animate` refuse it when they load the file."""
    folder = _growing(tmp_path / "model")

    def change(doc: dict) -> None:
        node = doc
        for part in section.split("."):
            node = node[part]
        node[key] = value

    edit(folder, change, reseal=True)
    out = tmp_path / "nca.h"
    outcome = cli("export", "c", folder, "--out", out)
    outcome.fails_cleanly(str(folder / JSON), needle, absent=[out])
    gif = tmp_path / "a.gif"
    cli("animate", "--model", folder, "--out", gif).fails_cleanly(needle, absent=[gif])


def test_label_names_with_control_characters_reach_the_terminal_escaped(
    cli, tmp_path: Path
) -> None:
    folder = saved(tmp_path / "model")
    names = {"0": "\x1b[2J\x1b[31mbenign", "1": "malignant\nfake,row"}
    edit(folder, lambda d: d["meta"].update(labels=names), reseal=True)
    image = tmp_path / "x.png"
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(image)
    outcome = cli("predict", "--model", folder, image)
    assert outcome.code == 0, outcome.err
    assert "\x1b" not in outcome.out and len(outcome.out.splitlines()) == 2
    assert "\\x1b" in outcome.out or "\\n" in outcome.out
