"""Bad run configs and bad ``--set`` overrides (issue 21): `ncaflow train` stops before it
writes anything, with one line naming the file, the key, the value and what is allowed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
BASES: dict[str, dict[str, Any]] = {
    "growing": {"task": "growing"},
    "selfclass": yaml.safe_load((REPO / "config/runs/selfclass.yaml").read_text()),
    "classification": {
        "task": "classification",
        "model": {"input_channels": 1, "output_channels": 2},
        "data": {"flag": "breastmnist"},
    },
    "segmentation": {"task": "segmentation", "model": {"input_channels": 3, "output_channels": 1}},
}


def _merge(base: dict[str, Any], key: str, value: Any) -> dict[str, Any]:
    out = yaml.safe_load(yaml.safe_dump(base))
    *parents, last = key.split(".")
    node = out
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = value
    return out


def _train(cli: Any, tmp_path: Path, text: str, *sets: str) -> tuple[Any, Path, Path]:
    run = tmp_path / "run.yaml"
    run.write_text(text)
    out = tmp_path / "out"
    args = ["train", "--config", run, "--out", out]
    for item in sets:
        args += ["--set", item]
    return cli(*args), run, out


NAN, INF = float("nan"), float("inf")

# (task, dotted key, bad value, text the one line must hold besides file and key)
BAD_VALUES = [
    ("growing", "train.scheduler.warmup", -1, "in [0, "),
    ("growing", "train.grad_clip", -0.5, "in (0, "),
    ("growing", "model.alive_threshold", NAN, "in [0, 1]"),
    ("selfclass", "data.val_size", -1, "in [1, "),
    ("growing", "train.log_images_every", 0, "in [1, "),
    ("classification", "data.eval_batch", 0, "in [1, "),
    ("growing", "train.batch_size", 0, "in [1, "),
    ("growing", "model.fire_rate", 1.5, "in (0, 1]"),
    ("growing", "train.lr", NAN, "in (0, "),
    ("growing", "train.lr", INF, "in (0, "),
    ("growing", "train.betas", [0.9, 1.5], "in [0, 1)"),
    ("growing", "train.seed", -1, "in [0, "),
    ("growing", "train.threads", 0, "in [1, "),
    ("growing", "train.scheduler.gamma", 0.0, "in (0, "),
    ("growing", "train.early_stopping.min_delta", -0.1, "in [0, "),
    ("growing", "model.hidden_width", 0, "in [1, "),
    ("segmentation", "data.test_fraction", 1.5, "in [0, 1)"),
    ("growing", "data.pool_size", 0, "in [1, "),
]


@pytest.mark.parametrize(
    ("task", "key", "value", "allowed"),
    BAD_VALUES,
    ids=[f"{k}={v}" for _, k, v, _ in BAD_VALUES],
)
def test_out_of_range_value(
    cli: Any, tmp_path: Path, task: str, key: str, value: Any, allowed: str
) -> None:
    text = yaml.safe_dump(_merge(BASES[task], key, value))
    outcome, run, out = _train(cli, tmp_path, text)
    shown = str(value[-1] if isinstance(value, list) else value)
    outcome.fails_cleanly(str(run), f"'{key}'", shown, allowed, absent=[out])


MEDMNIST = [
    ("data.flag", "foomnist", ["'data.flag'", "foomnist", "valid flags", "dermamnist"]),
    ("data.flag", "organmnist3d", ["'data.flag'", "3D"]),
    ("model.input_channels", 3, ["'model.input_channels'", "3", "breastmnist", "1 image"]),
    ("model.output_channels", 5, ["'model.output_channels'", "5", "2 classes"]),
]


@pytest.mark.parametrize(("key", "value", "needles"), MEDMNIST, ids=[m[1] for m in MEDMNIST])
def test_medmnist_keys_against_info(
    cli: Any, tmp_path: Path, key: str, value: Any, needles: list[str]
) -> None:
    text = yaml.safe_dump(_merge(BASES["classification"], key, value))
    outcome, run, out = _train(cli, tmp_path, text)
    outcome.fails_cleanly(str(run), *needles, absent=[out])


SETS = [
    ("train.lr", ["--set 'train.lr'", "KEY=VALUE", "train.lr=1e-3"]),
    ("nosuch.key=1", ["--set 'nosuch.key=1'", "unknown key 'nosuch'", "allowed keys"]),
    ("train.lr=abc", ["--set 'train.lr=abc'", "'train.lr'", "expected a number", "'abc'"]),
    ("train.lr=[1", ["--set 'train.lr=[1'", "not valid YAML", "quote"]),
    ("train.lr.x=1", ["--set 'train.lr.x=1'", "'train.lr'", "expected a number"]),
    ("train.x=1", ["--set 'train.x=1'", "unknown key 'train.x'", "allowed keys"]),
    ("=1", ["--set '=1'", "not a dotted key"]),
    ("train.lr=-1e-3", ["--set 'train.lr=-1e-3'", "-0.001", "in (0, 10]"]),
    ("model.nope=2", ["--set 'model.nope=2'", "unknown key 'model.nope'", "hidden_channels"]),
]


@pytest.mark.parametrize(("item", "needles"), SETS, ids=[s[0] for s in SETS])
def test_bad_set(cli: Any, tmp_path: Path, item: str, needles: list[str]) -> None:
    outcome, run, out = _train(cli, tmp_path, "task: growing\ntrain: {iterations: 2}\n", item)
    outcome.fails_cleanly(str(run), *needles, absent=[out])


def test_set_into_a_value(cli: Any, tmp_path: Path) -> None:
    outcome, run, out = _train(cli, tmp_path, "task: growing\ntrain: {lr: 0.1}\n", "train.lr.x=1")
    outcome.fails_cleanly(str(run), "--set 'train.lr.x=1'", "'train.lr' is a value", absent=[out])


FILES = [
    ("unknown-key", "task: growing\nmodel: {hiden_channels: 3}\n",
     ["'model.hiden_channels'", "allowed keys", "hidden_channels"]),
    ("list", "- task\n- growing\n", ["expected a mapping", "got list"]),
    ("scalar", "growing\n", ["expected a mapping", "got str"]),
    ("syntax", "task: growing\nmodel: {hidden_channels: [1\n", ["not valid YAML", "line 3"]),
    ("tab", "task: growing\n\tmodel: 1\n", ["not valid YAML", "line 2"]),
    ("empty", "", ["empty", "task: <name>"]),
    ("comments-only", "# nothing\n", ["empty"]),
    ("twice", "task: growing\ntrain: {lr: 0.1}\ntrain: {lr: 0.2}\n",
     ["'train' is given twice", "line 3"]),
    ("no-task", "model: {hidden_channels: 3}\n", ["missing required key 'task'"]),
]  # fmt: skip


@pytest.mark.parametrize(("text", "needles"), [f[1:] for f in FILES], ids=[f[0] for f in FILES])
def test_bad_yaml_file(cli: Any, tmp_path: Path, text: str, needles: list[str]) -> None:
    outcome, run, out = _train(cli, tmp_path, text)
    outcome.fails_cleanly(str(run), *needles, absent=[out])


def test_binary_file(cli: Any, tmp_path: Path) -> None:
    run = tmp_path / "run.yaml"
    run.write_bytes(b"\x80\x81\xfe\x00task")
    outcome = cli("train", "--config", run, "--out", tmp_path / "out")
    outcome.fails_cleanly(str(run), "not a text file", absent=[tmp_path / "out"])


@pytest.mark.parametrize("kind", ["missing", "folder"])
def test_config_path_not_a_file(cli: Any, tmp_path: Path, kind: str) -> None:
    run = tmp_path / "run.yaml"
    if kind == "folder":
        run.mkdir()
    outcome = cli("train", "--config", run, "--out", tmp_path / "out")
    needle = "not found" if kind == "missing" else "is a folder"
    outcome.fails_cleanly(str(run), needle, absent=[tmp_path / "out"])


# -- issue 26: every numeric key has an upper bound; no alias bombs; no value shown whole ------

HUGE = [
    ("growing", "data.size", 1_000_000, "in [1, 4096]"),
    ("growing", "model.hidden_channels", 100_000, "in [0, 1024]"),
    ("growing", "model.hidden_width", 1_000_000_000, "in [1, 8192]"),
    ("growing", "train.steps", [100_000_000, 100_000_000], "in [1, 100000]"),
    ("growing", "train.batch_size", 10_000_000, "in [1, 65536]"),
    ("growing", "data.pool_size", 10**9, "in [1, 1000000]"),
    ("classification", "data.eval_batch", 10**7, "in [1, 65536]"),
    ("classification", "data.eval_rollouts", 10**6, "in [1, 10000]"),
    ("growing", "model.kernel_size", 1001, "in [1, 31]"),
    ("growing", "train.iterations", 10**12, "in [1, 1000000000]"),
]


@pytest.mark.parametrize(
    ("task", "key", "value", "allowed"), HUGE, ids=[f"{k}={v}" for _, k, v, _ in HUGE]
)
def test_a_huge_value_is_refused_before_allocation(
    cli: Any, tmp_path: Path, task: str, key: str, value: Any, allowed: str
) -> None:
    text = yaml.safe_dump(_merge(BASES[task], key, value))
    outcome, run, out = _train(cli, tmp_path, text)
    outcome.fails_cleanly(str(run), f"'{key}'", allowed, absent=[out])


ALIAS_BOMB = "\n".join(
    ["task: growing", "a: &a [x, x, x, x, x, x, x, x, x, x]"]
    + [f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 10)}]" for i in range(8)]
)


def test_a_yaml_alias_bomb_is_refused_unexpanded(cli: Any, tmp_path: Path) -> None:
    """Nine levels of ten aliases: 10**9 strings if expanded (the 856-byte file of the issue)."""
    assert len(ALIAS_BOMB) < 900
    outcome, run, out = _train(cli, tmp_path, ALIAS_BOMB + "\n")
    outcome.fails_cleanly(str(run), "alias", "write the value out", "line 3", absent=[out])
    assert len(outcome.err) < 400


def test_a_plain_alias_is_refused_too(cli: Any, tmp_path: Path) -> None:
    text = "task: growing\ntrain: {steps: &s [4, 8]}\ncascade: {steps: *s, scales: [2, 1]}\n"
    outcome, run, out = _train(cli, tmp_path, text)
    outcome.fails_cleanly(str(run), "alias", absent=[out])


@pytest.mark.parametrize("where", ["file", "set"])
def test_a_megabyte_value_is_never_shown_whole(cli: Any, tmp_path: Path, where: str) -> None:
    big = "x" * 1_000_000
    if where == "file":
        outcome, run, out = _train(cli, tmp_path, f"task: growing\ntrain: {{lr: {big}}}\n")
    else:
        outcome, run, out = _train(cli, tmp_path, "task: growing\n", f"train.lr={big}")
    outcome.fails_cleanly(str(run), "'train.lr'", "characters", absent=[out])
    assert len(outcome.err) < 600


def test_a_deeply_nested_config_is_one_line(cli: Any, tmp_path: Path) -> None:
    outcome, run, out = _train(cli, tmp_path, "task: growing\nx: " + "[" * 50_000 + "\n")
    outcome.fails_cleanly(str(run), absent=[out])
    assert len(outcome.err) < 400


@pytest.mark.parametrize(
    ("sets", "key"),
    [
        (["data.size=4096", "data.pad=0", "train.steps=[100000]"], "train.steps"),
        (
            ["data.size=4096", "data.pad=0", "train.batch_size=65536", "data.pool_size=65536"],
            "train.batch_size",
        ),
    ],
    ids=["steps", "batch"],
)
def test_a_run_larger_than_any_machine_is_refused_with_its_estimate(
    cli: Any, tmp_path: Path, sets: list[str], key: str
) -> None:
    """Within every key's range, but the state x batch x steps kept for the backward pass
    alone is petabytes: refused before a byte is allocated, naming the key and estimate."""
    outcome, _, out = _train(cli, tmp_path, "task: growing\n", *sets)
    outcome.fails_cleanly(f"key '{key}'", "needs about", "PB", "more than this machine's",
                          absent=[out])  # fmt: skip


def test_reflect_padding_on_a_grid_too_small_names_its_key(cli: Any, tmp_path: Path) -> None:
    """A 1x1 grid with reflect padding (it said "reflect padding of 1 needs a grid larger
    than 1", naming no key)."""
    sets = [
        "data.size=1",
        "data.pad=0",
        "model.padding=reflect",
        "train.iterations=1",
        "train.steps=[1]",
        "train.batch_size=1",
        "data.pool_size=1",
        "train.progress=false",
        f"data.root={tmp_path / 'cache'}",
    ]
    outcome, _, out = _train(cli, tmp_path, "task: growing\n", *sets)  # fmt: skip
    outcome.fails_cleanly("key 'model.padding'", "data.size", absent=[out / "model.json"])
