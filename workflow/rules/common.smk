"""What the rules share: paths, the params and resources that several stages use, and
the targets. Rules hold no logic of their own; the config's checks, its task table (grid
cells per task) and what each job is given are tasks.smk, the reference section's
helpers reference_config.smk."""

import os
import sys
from pathlib import Path

from ncaflow.data.stored import DEFAULT_ROOT

# Where `ncaflow download` fetches a task's files: the library's default data.root.
DATA_ROOT = DEFAULT_ROOT


def manifest(task: str) -> str:
    """The download manifest of a task (a wildcard pattern when task is "{task}")."""
    return f"{DATA_ROOT}/manifests/{task}.json"


# workflow/envs/ncaflow.yaml installs the package from here (pip expands ${NCAFLOW_ROOT}).
os.environ.setdefault("NCAFLOW_ROOT", str(Path(workflow.basedir).resolve()))

# -- paths ------------------------------------------------------------------------

MODEL_DIR = "results/models/{task}/{cell}/fold{fold}"


def model_dirs(task: str) -> list[str]:
    t = TASKS[task]
    return [
        MODEL_DIR.format(task=task, cell=cell, fold=k)
        for cell in t.cells
        for k in range(t.folds_of(cell))
    ]


def models_of(task: str) -> list[str]:
    return [f"{d}/model.safetensors" for d in model_dirs(task)]


def metrics_of(task: str) -> list[str]:
    return [f"{d}/metrics.json" for d in model_dirs(task)]


# -- inputs and params (functions of wildcards) --------------------------------------


def run_config(wildcards) -> str:
    return TASKS[wildcards.task].run


def data_of(task: str) -> list[str]:
    """What a task's jobs read besides models: its download manifest, and its
    folds file when it cross-validates over its data (saved models point at it)."""
    t = TASKS[task]
    files = [manifest(t.name)]
    if t.fold_by == "data":
        files.append(f"data/prepared/{t.name}/folds.json")
    return files


def task_data(wildcards) -> list[str]:
    return data_of(wildcards.task)


def evaluate_resource(name: str):
    return config["resources"]["evaluate"][name]


def other_resource(name: str):
    return config["resources"]["other"][name]


def select_metric(wildcards) -> str:
    return TASKS[wildcards.task].metric


def select_mode(wildcards) -> str:
    return TASKS[wildcards.task].mode


def task_metrics(wildcards) -> list[str]:
    return metrics_of(wildcards.task)


def task_histories(wildcards) -> list[str]:
    return [f"{d}/history.csv" for d in model_dirs(wildcards.task)]


def model_dir(wildcards) -> str:
    return MODEL_DIR.format(**wildcards)


def out_dir(path: str):
    """params function: the folder of an output path pattern."""

    def get(wildcards) -> str:
        return str(Path(path.format(**wildcards)).parent)

    return get


# -- targets ----------------------------------------------------------------------


def animation_targets(task: str) -> list[str]:
    return [f"results/animations/{task}.gif"]


def export_targets(task: str) -> list[str]:
    return [f"results/export/{task}/{task}.h", f"results/export/{task}/{task}.json"]


def table_targets(task: str) -> list[str]:
    return [f"results/tables/{task}.{ext}" for ext in ("csv", "md", "tex")]


def task_targets(task: str) -> list[str]:
    return (
        table_targets(task)
        + figure_targets(task)
        + animation_targets(task)
        + export_targets(task)
    )


def all_of(targets) -> list[str]:
    return [path for task in TASKS for path in targets(task)]


def figure_targets(task: str) -> list[str]:
    """The summary figures (grid and params only where there are cells to compare), and the
    per-model ones its library task draws (Task.figures: "growth", "overlay", each a rule
    of figures.smk)."""
    comparing = ["grid", "params"] if len(TASKS[task].cells) > 1 else []
    kinds = ["folds", "curves", *comparing, *get_task(TASKS[task].kind).figures]
    return [
        f"results/figures/{task}/{k}.{ext}" for k in kinds for ext in ("png", "pdf")
    ]


def note_table_drift():
    """After a successful run: say (as information) when results/tables/ no longer holds the
    committed tables that README.md quotes, e.g. after retraining on another CPU."""
    import subprocess

    try:
        status = subprocess.run(
            ["git", "status", "--porcelain", "--", "results/tables"],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired):
        return
    changed = [
        line[3:] for line in status.stdout.splitlines() if line.startswith((" M", "M"))
    ]
    if status.returncode != 0 or not changed:
        return
    names = ", ".join(Path(p).name for p in changed[:4]) + (
        ", ..." if len(changed) > 4 else ""
    )
    print(
        f"ncaflow: note: {len(changed)} file(s) in results/tables/ now differ from the "
        f"committed ones that README.md quotes ({names}). This is information, not an "
        "error: another config, or the same config trained on another machine, gives other "
        "numbers (README, 'The main job'). `git diff results/tables` shows how; "
        "`git checkout results/tables` restores the quoted tables.",
        file=sys.stderr,
    )
