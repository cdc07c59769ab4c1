"""`ncaflow train` with several --out folders: one run each, in turn, in one process (the
workflow's `fold_jobs: together`), byte-identical to the same runs one process each."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from own_folders import classification_run, write_classification_folder

from ncaflow.cli import main

TRAIN = {"iterations": 12, "batch_size": 8, "steps": [3, 4], "lr": 0.01, "eval_every": 6}
WEIGHTS = ("model.safetensors", "last.safetensors")


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("together")
    folder = write_classification_folder(root / "own", n=24)
    run = classification_run(root / "run.yaml", folder, train=TRAIN)
    folds = root / "folds.json"
    assert main(["prepare", "--config", str(run), "--out", str(folds), "--k", "3"]) == 0
    return run, folds


def _history_without_time(path: Path) -> list[list[str]]:
    rows = [line.split(",") for line in path.read_text().splitlines()]
    keep = [i for i, name in enumerate(rows[0]) if "second" not in name and name != "time"]
    return [[row[i] for i in keep] for row in rows]


def test_folds_in_one_process_equal_one_process_each(
    prepared: tuple[Path, Path], tmp_path: Path
) -> None:
    run, folds = (str(p) for p in prepared)
    alone = [tmp_path / f"alone{k}" for k in range(3)]
    for k, out in enumerate(alone):
        argv = ["train", "--config", run, "--out", str(out), "--folds", folds, "--fold", str(k)]
        assert main([*argv, "--restart-changed"]) == 0
    together = [str(tmp_path / f"together{k}") for k in range(3)]
    argv = ["train", "--config", run, "--folds", folds, "--restart-changed"]
    assert main([*argv, "--out", *together, "--fold", "0", "1", "2"]) == 0
    for a, t in zip(alone, map(Path, together), strict=True):
        for name in WEIGHTS:
            assert (a / name).read_bytes() == (t / name).read_bytes(), f"{t.name}/{name}"
        assert (
            json.loads((a / "model.json").read_text())["config"]
            == json.loads((t / "model.json").read_text())["config"]
        )
        assert _history_without_time(a / "history.csv") == _history_without_time(t / "history.csv")
        assert not (t / "checkpoint.key").exists()  # each job released its key
    # the three folds are three different models
    assert len({(Path(t) / "model.safetensors").read_bytes() for t in together}) == 3


def test_seeds_pair_with_folders(prepared: tuple[Path, Path], tmp_path: Path) -> None:
    run, _ = (str(p) for p in prepared)
    outs = [str(tmp_path / "s0"), str(tmp_path / "s1")]
    assert main(["train", "--config", run, "--out", *outs, "--seed", "3", "4"]) == 0
    seeds = [json.loads(Path(o, "model.json").read_text())["config"]["train"]["seed"] for o in outs]
    assert seeds == [3, 4]


@pytest.mark.parametrize(
    ("extra", "says"),
    [
        (["--out", "a", "b", "--fold", "0"], "--fold gives 1 values for 2 --out folders"),
        (["--out", "a", "b", "--seed", "1", "2", "3"], "--seed gives 3 values for 2 --out"),
        (["--out", "a", "./a", "--seed", "1", "2"], "--out names a folder twice"),
        (["--out", "a", "b"], "would train the same run 2 times"),
    ],
)
def test_mismatched_job_lists_are_refused_before_anything_is_written(
    prepared: tuple[Path, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    extra: list[str],
    says: str,
) -> None:
    run, folds = (str(p) for p in prepared)
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--config", run, "--folds", folds, *extra]) == 2
    err = capsys.readouterr().err
    assert says in err and len(err.strip().splitlines()) == 1
    assert sorted(tmp_path.iterdir()) == []
