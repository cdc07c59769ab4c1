"""End-to-end tests of the Snakemake workflow (marker: workflow).

The tiny config runs for real (`snakemake --cores 2`) in a temporary copy of
the workflow, on the real data mirror (tests/conftest.py's `mirror`); the other tests are dry
runs or stop at config validation, so the module stays within a few minutes.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

pytestmark = pytest.mark.workflow

REPO = Path(__file__).resolve().parents[2]
RESERVED_TASKS = {"growing": "growing", "segmentation": "kvasir"}
# The workflow's jobs run the eager perception unless the environment says otherwise:
# compiling it costs 5-11 s a job, a quarter of the tiny run, and the compiled perception's
# equality with the eager one is tests/backends/test_fast.py's (tests/dvc keeps the default).
WORKFLOW_ENV = {"NCAFLOW_COMPILE": "0"}


def copy_workflow(dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "Snakefile", dest / "Snakefile")
    for folder in ("workflow", "config", ".test"):
        shutil.copytree(REPO / folder, dest / folder, ignore=shutil.ignore_patterns("__pycache__"))
    return dest


def snakemake(
    cwd: Path, *args: str, timeout: float = 120, check: bool = True
) -> subprocess.CompletedProcess[str]:
    # NCAFLOW_DATA_MIRROR: exported by tests/conftest.py when a mirror was found
    proc = subprocess.run(
        ["snakemake", *args],
        cwd=cwd,
        env={**WORKFLOW_ENV, **os.environ},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and proc.returncode != 0:
        pytest.fail(
            f"snakemake {' '.join(args)} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
        )
    return proc


def job_counts(output: str) -> dict[str, int]:
    """The `job count` table of `snakemake -n --quiet rules`."""
    counts: dict[str, int] = {}
    for line in output.splitlines():
        m = re.match(r"^(\w+)\s+(\d+)$", line.strip())
        if m and m.group(1) != "total":
            counts[m.group(1)] = int(m.group(2))
    return counts


def expected_trainings(config: dict[str, Any]) -> dict[str, int]:
    """Task name -> number of training jobs (cells x folds), computed from a config."""
    out = {}
    for name, spec in config["tasks"].items():
        cells = math.prod(len(g["values"]) for g in spec.get("grid", {}).values())
        for flag in spec.get("flags", [name]):
            out[flag] = cells * spec.get("folds", 2)
        if spec.get("variants"):  # named variants: each its own number of folds (seeds)
            own = spec.get("variant_folds", {})
            out[name] = sum(own.get(v, spec.get("folds", 2)) for v in spec["variants"])
    return out


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory, mirror: Path) -> Path:
    root = copy_workflow(tmp_path_factory.mktemp("tiny"))
    snakemake(root, "--cores", "2", "--configfile", ".test/config/config.yaml", timeout=900)
    return root


def test_tiny_run_tables(tiny: Path) -> None:
    config = yaml.safe_load((tiny / ".test/config/config.yaml").read_text())
    trainings = expected_trainings(config)
    assert set(trainings) == {"growing", "selfclass", "breastmnist", "kvasir"}
    for task, n_models in trainings.items():
        tables = tiny / "results/tables"
        summary = pd.read_csv(tables / f"{task}.csv")
        folds = pd.read_csv(tables / f"{task}_folds.csv")
        assert len(folds) == n_models
        assert len(summary) == n_models // summary["folds"].iloc[0]
        assert summary["best"].sum() == 1
        for col in summary.columns:
            if re.search(r"_(acc|auc|f1|dice|iou|pixel_acc)_mean$", col):
                assert summary[col].between(0, 1).all(), (task, col)
            if col.endswith(("loss_mean", "mse_mean")):
                assert (summary[col] >= 0).all() and summary[col].notna().all(), (task, col)
        assert (summary["parameters"] > 0).all()
        md = (tables / f"{task}.md").read_text()
        assert md.count("\n|") >= len(summary) + 1 and "±" in md
        assert r"\begin{tabular}" in (tables / f"{task}.tex").read_text()
        best = (tables / f"{task}.best").read_text().strip()
        assert (tiny / best / "model.safetensors").is_file()
        metrics = json.loads((tiny / best / "metrics.json").read_text())
        assert metrics["parameters"] > 0 and any(k.startswith("test_") for k in metrics)


def test_tiny_run_figures_and_products(tiny: Path) -> None:
    config = yaml.safe_load((tiny / ".test/config/config.yaml").read_text())
    entries = {
        name: entry
        for key, entry in config["tasks"].items()
        for name in entry.get("flags", [key])  # a medmnist entry names its tasks by flag
    }
    for task in ("growing", "selfclass", "breastmnist", "kvasir"):
        (grid,) = entries[task]["grid"].values()
        comparing = len(grid["values"]) > 1  # grid and params compare two or more cells
        kinds = ["folds", "curves", *(["grid", "params"] if comparing else [])]
        for kind, ext in itertools.product(["grid", "params"], ("png", "pdf")):
            assert (tiny / f"results/figures/{task}/{kind}.{ext}").exists() == comparing
        kinds += ["growth"] if task == "growing" else []
        kinds += ["overlay"] if task == "kvasir" else []
        for kind, ext in itertools.product(kinds, ("png", "pdf")):
            path = tiny / f"results/figures/{task}/{kind}.{ext}"
            assert path.stat().st_size > 1000, path
        assert (tiny / f"results/animations/{task}.gif").read_bytes()[:3] == b"GIF"
        assert "#" in (tiny / f"results/export/{task}/{task}.h").read_text()
        json.loads((tiny / f"results/export/{task}/{task}.json").read_text())
    assert (tiny / "results/report.html").stat().st_size > 10_000
    # logs and benchmarks of every training job; no checkpoint left behind
    assert list((tiny / "results/benchmarks/train").rglob("*.tsv"))
    assert not list((tiny / "results/models").rglob("checkpoint.*"))


def test_nothing_to_do_after_a_full_run(tiny: Path) -> None:
    out = snakemake(tiny, "-n", "--configfile", ".test/config/config.yaml").stdout
    assert "Nothing to be done" in out


def test_a_run_that_rewrote_committed_tables_says_so(tiny: Path, tmp_path: Path) -> None:
    """When results/tables/ differs from what git holds (the README quotes those tables), the
    run's last lines say so as information, and the run still succeeds."""
    copy = tmp_path / "copy"
    shutil.copytree(tiny, copy, symlinks=True)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], cwd=copy, check=True)
    table = copy / "results/tables/growing.csv"
    ours = table.read_text()
    table.write_text(ours + "# the committed numbers\n")
    subprocess.run([*git, "add", "results/tables"], cwd=copy, check=True)
    subprocess.run([*git, "commit", "-qm", "tables"], cwd=copy, check=True)
    (copy / "results/tables/growing.md").unlink()  # the aggregate rule runs again
    proc = snakemake(copy, "tables", "--cores", "1", "--configfile", ".test/config/config.yaml")
    assert table.read_text() == ours
    assert "now differ from the committed ones that README.md quotes (growing.csv" in proc.stderr
    assert "information, not an error" in proc.stderr


def test_changing_one_grid_value_reruns_only_its_cells(tiny: Path) -> None:
    config = yaml.safe_load((tiny / ".test/config/config.yaml").read_text())
    config["tasks"]["medmnist"]["grid"]["hidden"]["values"] = [6, 10]  # was [6, 8]
    (tiny / "config/changed.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    out = snakemake(tiny, "-n", "--configfile", "config/changed.yaml").stdout
    trained = re.findall(r"rule train:\n(?:\s+.*\n)*?\s+wildcards: (.*)", out)
    assert sorted(trained) == [f"task=breastmnist, cell=hidden~10, fold={k}" for k in range(2)], (
        out[-3000:]
    )
    counts = job_counts(
        snakemake(tiny, "-n", "--quiet", "rules", "--configfile", "config/changed.yaml").stdout
    )
    assert counts.get("train") == 2 and counts.get("evaluate") == 2
    assert counts.get("aggregate") == 1 and counts.get("plot") == 1
    for rule in ("download", "prepare", "growth", "overlay"):
        assert rule not in counts, counts


def test_changed_data_retrains_only_its_task(tiny: Path, tmp_path: Path, mirror: Path) -> None:
    """New data for one task (one BreastMNIST label flipped in a copy of the mirror)
    re-runs that task's cells once the download manifests are refreshed; the other
    tasks stay cached, and going back to the original data re-runs nothing."""
    import numpy as np

    changed = tmp_path / "mirror"
    shutil.copytree(mirror, changed)
    npz = changed / "medmnist" / "breastmnist.npz"
    with np.load(npz) as f:
        arrays = dict(f)
    arrays["train_labels"][0] = 1 - arrays["train_labels"][0]
    np.savez(npz, **arrays)
    tiny_args = ("--configfile", ".test/config/config.yaml")
    refresh = ("--cores", "1", "--forcerun", "download", "--until", "download", *tiny_args)
    try:
        snakemake(tiny, *refresh, "--config", f"mirror={changed}")
        out = snakemake(tiny, "-n", *tiny_args).stdout
        trained = re.findall(r"rule train:\n(?:\s+.*\n)*?\s+wildcards: (task=\w+)", out)
        assert trained and set(trained) == {"task=breastmnist"}, out[-3000:]
    finally:
        snakemake(tiny, *refresh)
    assert "Nothing to be done" in snakemake(tiny, "-n", *tiny_args).stdout


def test_failed_training_leaves_no_output(tiny: Path) -> None:
    config = yaml.safe_load((tiny / ".test/config/config.yaml").read_text())
    config["tasks"]["growing"]["grid"]["hidden"]["values"] = [4]
    # valid as a config (a bad value now stops `snakemake` itself, before any job):
    # the missing model to fine-tune from fails the job once training starts
    config["tasks"]["growing"]["set"]["train.finetune_from"] = "nothere/model.safetensors"
    (tiny / "config/broken.yaml").write_text(yaml.safe_dump(config))
    target = "results/models/growing/hidden~4/fold0/model.safetensors"
    proc = snakemake(
        tiny, target, "--cores", "1", "--configfile", "config/broken.yaml", check=False
    )
    assert proc.returncode != 0
    assert "nothere" in (tiny / "results/logs/train/growing/hidden~4/fold0.log").read_text()
    assert not list((tiny / "results/models/growing/hidden~4").rglob("*.safetensors"))


@pytest.mark.parametrize("name", ["config", "paper"])
def test_dry_run_schedules_every_cell_and_fold(tmp_path: Path, name: str) -> None:
    root = copy_workflow(tmp_path)
    args = ["-n", "--quiet", "rules"] + (
        [] if name == "config" else ["--configfile", "config/paper.yaml"]
    )
    counts = job_counts(snakemake(root, *args, timeout=180).stdout)
    trainings = expected_trainings(yaml.safe_load((root / f"config/{name}.yaml").read_text()))
    assert counts["train"] == sum(trainings.values())
    assert counts["evaluate"] == counts["train"]
    assert counts["aggregate"] == len(trainings) == counts["animate"] == counts["export"]


def test_longest_training_jobs_start_first(tmp_path: Path) -> None:
    """Snakemake starts ready jobs by priority: every training job's is its task's runtime
    (config/config.yaml: BreastMNIST 30 minutes before Kvasir's 10), and the data jobs'
    is above all of them, so that no task waits for its download at the end."""
    root = copy_workflow(tmp_path)
    config = yaml.safe_load((root / "config/config.yaml").read_text())
    plan = snakemake(root, "-n", "--forceall", timeout=180).stdout
    jobs = re.findall(
        r"^(?:local)?rule (\w+):\n(?:    .*\n)*?"
        r"    wildcards: task=(\w+).*\n(?:    priority: (\d+))?",
        plan,
        flags=re.M,
    )
    default = config["resources"]["train"]["runtime"]
    runtime = {
        name: spec.get("resources", {}).get("runtime", default)
        for name, spec in config["tasks"].items()
    }
    runtime["breastmnist"] = runtime.pop("medmnist")
    trains = {(task, int(p or 0)) for rule, task, p in jobs if rule == "train"}
    assert trains == {(task, minutes) for task, minutes in runtime.items()}
    assert len(set(runtime.values())) > 1  # the default config does order its tasks
    data = [int(p or 0) for rule, _, p in jobs if rule in ("download", "prepare")]
    assert len(data) == len(runtime) + 1  # Kvasir's folds are prepared
    assert min(data) > max(runtime.values()) * 2


def _tiny_with(tmp_path: Path, edit: Any) -> Path:
    root = copy_workflow(tmp_path)
    config = yaml.safe_load((root / ".test/config/config.yaml").read_text())
    edit(config)
    (root / "config/bad.yaml").write_text(yaml.safe_dump(config))
    return root


def _set(path: str, value: Any):  # -> an edit of the config dict
    def edit(config: dict[str, Any]) -> None:
        *parents, last = path.split("/")
        node = config
        for key in parents:
            node = node[key]
        node[last] = value

    return edit


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (_set("colours", 3), ["unknown config key 'colours'", "allowed keys", "tasks"]),
        (_set("tasks/growing/fold_by", "sead"), ["tasks.growing.fold_by", "['data', 'seed']"]),
        (_set("tasks/growing/folds", 0), ["tasks.growing.folds", "minimum"]),
        (
            _set("tasks/kvasir/grid/hid_den", {"key": "model.hidden_channels", "values": [8]}),
            ["tasks.kvasir.grid", "hid_den"],
        ),
        (
            _set("tasks/kvasir/grid/hidden/key", "model.hiden_channels"),
            ["model.hiden_channels", "hidden_channels"],
        ),
        (
            _set("tasks/kvasir/run", "config/runs/nothere.yaml"),
            ["tasks.kvasir.run", "does not exist"],
        ),
        (
            _set("tasks/train", {"run": "config/runs/kvasir.yaml"}),
            ["tasks.train", "taken by a rule"],
        ),
        (_set("resources/train/gpu", -1), ["resources.train.gpu"]),
    ],
)
def test_bad_config_stops_before_any_job(tmp_path: Path, edit: Any, expected: list[str]) -> None:
    root = _tiny_with(tmp_path, edit)
    proc = snakemake(
        root, "--cores", "1", "--configfile", "config/bad.yaml", check=False, timeout=60
    )
    assert proc.returncode != 0
    message = proc.stdout + proc.stderr
    for text in expected:
        assert text in message, message[-2000:]
    assert not (root / "results").exists() and not (root / "data").exists()


def test_the_docs_model_paths_are_cells_of_the_default_config() -> None:
    """Every results/models/<task>/<cell>/fold<k> that README.md or config/README.md names is
    a cell and fold of config/config.yaml (a dry run of its metrics builds); a cell the grid
    lacks is refused with the cells it has."""
    pattern = r"results/models/[a-z0-9_]+/[^/\s`]+/fold\d+"
    named = {
        m
        for doc in ("README.md", "config/README.md")
        for m in re.findall(pattern, (REPO / doc).read_text())
    }
    assert len(named) >= 2
    for model in sorted(named):
        snakemake(REPO, "-n", "--quiet", "rules", "--cores", "1", f"{model}/metrics.json")
    proc = snakemake(
        REPO,
        "-n",
        "--cores",
        "1",
        "results/models/kvasir/hidden~99/fold0/metrics.json",
        check=False,
    )
    grid = yaml.safe_load((REPO / "config/config.yaml").read_text())["tasks"]["kvasir"]["grid"]
    cells = ", ".join(f"hidden~{v}" for v in grid["hidden"]["values"])
    assert proc.returncode != 0
    said = f"task 'kvasir' has no grid cell 'hidden~99'; its cells: {cells} (the grid under"
    assert said in proc.stdout + proc.stderr


def test_lint_and_format() -> None:
    lint = subprocess.run(
        ["snakemake", "--lint", "--configfile", ".test/config/config.yaml"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert lint.returncode == 0 and "good condition" in lint.stdout + lint.stderr, lint.stdout
    if shutil.which("snakefmt"):
        fmt = subprocess.run(
            ["snakefmt", "--check", "Snakefile", "workflow"],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert fmt.returncode == 0, fmt.stderr
