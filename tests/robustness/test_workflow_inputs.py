"""Bad workflow configs and hostile values (issue 21): `snakemake` stops before it schedules
any job with one line naming the config key, the value and what is allowed; no value of a
config reaches a shell unquoted; a failing download leaves its reason in the rule's log.

Every case runs the real `snakemake` on a copy of the workflow with a one-task config.
"""

from __future__ import annotations

import copy
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]

GROWING = {  # one small growing model: 2 iterations on a 16x16 target
    "run": "config/runs/growing.yaml",
    "folds": 1,
    "fold_by": "seed",
    "set": {
        "data.size": 16,
        "data.pad": 4,
        "data.pool_size": 8,
        "data.eval_batch": 2,
        "data.persistence_steps": 4,
        "model.hidden_channels": 4,
        "model.hidden_width": 8,
        "train.iterations": 2,
        "train.batch_size": 2,
        "train.steps": [4, 4],
        "train.eval_every": 1,
        "train.checkpoint_every": 1,
        "train.log_images_every": 1000,
    },
}
MEDMNIST = {"run": "config/runs/breastmnist.yaml", "flags": ["breastmnist", "dermamnist"]}


def workflow(root: Path, tasks: dict[str, Any]) -> Path:
    """A copy of the workflow in ``root`` with config/min.yaml holding ``tasks``."""
    shutil.copy(REPO / "Snakefile", root / "Snakefile")
    for folder in ("workflow", "config"):
        shutil.copytree(REPO / folder, root / folder, ignore=shutil.ignore_patterns("__pycache__"))
    (root / "config/min.yaml").write_text(yaml.safe_dump({"tasks": tasks}))
    return root


def snakemake(root: Path, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}  # the mirror: tests/conftest.py
    return subprocess.run(
        ["snakemake", *args, "--cores", "1", "--configfile", "config/min.yaml"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _set(task: str, key: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def edit(tasks: dict[str, Any]) -> None:
        tasks[task].setdefault("set", {})[key] = value

    return edit


def _put(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def edit(tasks: dict[str, Any]) -> None:
        *parents, last = path.split("/")
        node = tasks
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value

    return edit


def _bad_run_file(tasks: dict[str, Any]) -> None:
    tasks["growing"]["run"] = "config/runs/broken.yaml"


# (id, edit of the tasks, extra snakemake args, texts the one stderr line must hold)
CASES: list[tuple[str, Any, list[str], list[str]]] = [
    ("warmup", _set("growing", "train.scheduler.warmup", -1), [],
     ["tasks.growing.set", "config/runs/growing.yaml", "'train.scheduler.warmup'", "-1",
      "in [0, "]),
    ("grad_clip", _set("growing", "train.grad_clip", -1.0), [],
     ["tasks.growing.set", "'train.grad_clip'", "-1.0", "in (0, "]),
    ("alive_threshold", _set("growing", "model.alive_threshold", float("nan")), [],
     ["'model.alive_threshold'", "nan", "in [0, 1]"]),
    ("fire_rate", _put("growing/grid/fire", {"key": "model.fire_rate", "values": [0.5, 1.5]}), [],
     ["tasks.growing.grid (fire~1.5)", "'model.fire_rate'", "1.5", "in (0, 1]"]),
    ("unknown-key", _set("growing", "train.nosuch", 1), [],
     ["'train.nosuch'", "allowed keys", "batch_size"]),
    ("flag", _put("medmnist/flags", ["breastmnist", "foomnist"]), [],
     ["tasks.medmnist.flags", "foomnist", "valid flags"]),
    ("flag_set", _put("medmnist/flag_set", {"dermamnist": {"model.input_channels": 1}}), [],
     ["tasks.medmnist", "'model.input_channels'", "dermamnist", "3 image channels"]),
    ("folds", _put("growing/folds", 0), [], ["tasks.growing.folds", "minimum of 1", "min.yaml"]),
    ("run-yaml", _bad_run_file, [], ["tasks.growing.run", "broken.yaml", "line 2"]),
    ("config-fold_seed", None, ["--config", "fold_seed=-1"], ["'fold_seed'", "-1", "--config"]),
    # issue 26: a grid value is part of a folder name: checked, not left to Snakemake's
    # "File name too long" or its multi-line PeriodicWildcardError
    ("grid-value-300-chars", _put("growing/grid/tag", {"key": "name", "values": ["a1" * 150]}),
     [], ["tasks.growing.grid.tag.values", "(300 characters)", "at most 40 characters"]),
    ("grid-value-periodic", _put("growing/grid/tag", {"key": "name", "values": ["x" * 25]}),
     [], ["tasks.growing.grid.tag.values", "repeated 20 times", "shorter value"]),
]  # fmt: skip


@pytest.mark.parametrize(
    ("edit", "extra", "needles"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_bad_config_stops_before_any_job(
    tmp_path: Path, edit: Any, extra: list[str], needles: list[str]
) -> None:
    tasks = {"growing": copy.deepcopy(GROWING), "medmnist": copy.deepcopy(MEDMNIST)}
    if edit is not None:
        edit(tasks)
    root = workflow(tmp_path, tasks)
    (root / "config/runs/broken.yaml").write_text("task: growing\n  bad: indent\n")
    proc = snakemake(root, "-n", *extra)
    assert proc.returncode != 0, proc.stdout[-2000:]
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr and "Job " not in proc.stdout
    for needle in needles:
        assert needle in lines[0], f"{needle!r} not in {lines[0]!r}"
    assert not (root / "results").exists() and not (root / "data").exists()


PAYLOAD = "$(touch PWNED)"


def test_run_path_reaches_no_shell(tmp_path: Path, mirror: Path) -> None:
    """A run config whose name is a shell command: the download and training jobs run for
    real and the command never does."""
    tasks = {"growing": {**copy.deepcopy(GROWING), "run": f"config/runs/g{PAYLOAD}.yaml"}}
    root = workflow(tmp_path, tasks)
    shutil.copy(root / "config/runs/growing.yaml", root / f"config/runs/g{PAYLOAD}.yaml")
    model = "results/models/growing/base/fold0/model.safetensors"
    proc = snakemake(root, model)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (root / model).is_file()
    assert not (root / "PWNED").exists()


def _pretend_done(root: Path, *, but: str) -> None:
    """Create every output of the workflow except the rule ``but``'s, oldest first, so
    that a run does that rule's job only."""
    summary = snakemake(root, "--summary").stdout
    rows = [line.split("\t") for line in summary.splitlines()[1:] if "\t" in line]
    order = ["download", "train", "evaluate", "aggregate"]
    start = time.time() - 3600
    for path in [*root.joinpath("config").rglob("*"), *root.joinpath("workflow").rglob("*")]:
        os.utime(path, (start, start))
    for path, _, rule, *_ in rows:
        if rule == but:
            continue
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).touch()
        t = start + 60 * (1 + (order.index(rule) if rule in order else len(order)))
        os.utime(root / path, (t, t))


def test_config_value_reaches_no_shell(tmp_path: Path) -> None:
    """`--config mirror=...` with a shell command in it: the report rule (which hands the
    run's --config on to a nested snakemake) runs for real; the command never does."""
    root = workflow(tmp_path, {"growing": copy.deepcopy(GROWING)})
    _pretend_done(root, but="report")
    proc = snakemake(root, "results/report.html", "--config", f"mirror=x'{PAYLOAD}'")
    assert "rule report:" in proc.stdout + proc.stderr, proc.stderr[-3000:]
    assert "rule train:" not in proc.stdout + proc.stderr
    assert (root / "results/logs/report.log").is_file()  # the rule's shell command ran
    assert not (root / "PWNED").exists()


@pytest.mark.parametrize(
    ("key", "value", "needles"),
    [
        ("data.target", "nothere.png", ["ncaflow download", "nothere.png", "not an existing file"]),
    ],
)
def test_failing_download_leaves_its_reason_in_its_log(
    tmp_path: Path, key: str, value: str, needles: list[str]
) -> None:
    tasks = {"growing": copy.deepcopy(GROWING)}
    tasks["growing"]["set"][key] = value
    root = workflow(tmp_path, tasks)
    proc = snakemake(root, "data/raw/manifests/growing.json")
    assert proc.returncode != 0
    lines = (root / "results/logs/download/growing.log").read_text().splitlines()
    assert len(lines) == 1 and "Traceback" not in lines[0], lines
    for needle in needles:
        assert needle in lines[0], lines[0]
    assert not (root / "data/raw/manifests/growing.json").exists()


def test_a_failing_download_puts_its_one_line_on_the_terminal(tmp_path: Path) -> None:
    """Not only in results/logs/download/*.log: the line that says what to do reaches
    the terminal of `snakemake`, after Snakemake's own error block (issue 26)."""
    tasks = {"growing": copy.deepcopy(GROWING)}
    tasks["growing"]["set"]["data.target"] = "nothere.png"
    root = workflow(tmp_path, tasks)
    proc = snakemake(root, "data/raw/manifests/growing.json")
    assert proc.returncode != 0
    (line,) = (root / "results/logs/download/growing.log").read_text().splitlines()
    assert line in proc.stderr.splitlines(), proc.stderr[-2000:]
