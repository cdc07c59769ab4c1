"""What the rules share: config validation, paths, the params and resources that
several stages use, and the targets. Rules hold no logic of their own; the task table
(grid cells per task) is tasks.smk, each stage's own params are in its .smk file."""

import os
import sys
from pathlib import Path
from typing import NoReturn

import jsonschema
import yaml
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from ncaflow.tasks.base import CommonData

# Where `ncaflow download` fetches a task's files: the library's default data.root.
DATA_ROOT = CommonData.root


def manifest(task: str) -> str:
    """The download manifest of a task (a wildcard pattern when task is "{task}")."""
    return f"{DATA_ROOT}/manifests/{task}.json"


# workflow/envs/ncaflow.yaml installs the package from here (pip expands ${NCAFLOW_ROOT}).
os.environ.setdefault("NCAFLOW_ROOT", str(Path(workflow.basedir).resolve()))

# -- validation -------------------------------------------------------------------


def stop(message: str) -> NoReturn:
    """End `snakemake` before it schedules any job: one line on stderr, exit code 1."""
    print(f"ncaflow workflow: invalid config: {message}", file=sys.stderr)
    raise SystemExit(1)


def _explain(err: jsonschema.ValidationError) -> str:
    """One line naming the dotted config key, what is wrong and what is allowed."""
    where = ".".join(str(p) for p in err.absolute_path) or "<root>"
    if err.validator == "additionalProperties" and isinstance(err.instance, dict):
        allowed = sorted(err.schema.get("properties", {}))
        extra = sorted(set(err.instance) - set(allowed))
        if allowed and extra:
            key = f"{where}.{extra[0]}" if err.absolute_path else extra[0]
            return f"unknown config key '{key}'; allowed keys: {allowed}"
    if err.validator == "enum":
        return f"config key '{where}': {err.instance!r} is not one of {err.validator_value}"
    return f"config key '{where}': {err.message}"


def validate_config(config: dict, schema: str) -> None:
    """Check the config against the schema (friendly message), then fill its defaults."""
    doc = yaml.safe_load((Path(workflow.basedir) / schema).read_text())
    errors = jsonschema.Draft202012Validator(doc).iter_errors(config)
    err = jsonschema.exceptions.best_match(errors)
    if err is not None:
        files = [str(f) for f in workflow.overwrite_configfiles]
        files = files or ["config/config.yaml"]
        if workflow.config_settings.config_args:
            files.append("--config")
        stop(f"{_explain(err)} (in {' + '.join(files)}; see {schema})")
    validate(config, schema)  # snakemake's validator fills in the schema defaults
    if config.get("mirror"):  # the download jobs (local rules) read it from here
        os.environ.update(NCAFLOW_DATA_MIRROR=str(Path(config["mirror"]).resolve()))


# -- paths ------------------------------------------------------------------------

MODEL_DIR = "results/models/{task}/{cell}/fold{fold}"


def model_dirs(task: str) -> list[str]:
    t = TASKS[task]
    return [
        MODEL_DIR.format(task=task, cell=cell, fold=k)
        for cell in t.cells
        for k in range(t.cell_folds.get(cell, t.folds))
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


FIGURES = ("grid", "folds", "curves", "params")


def figure_targets(task: str) -> list[str]:
    """The summary figures, and the per-model ones its library task draws (Task.figures:
    "growth", "overlay", each a rule of figures.smk)."""
    kinds = [*FIGURES, *get_task(TASKS[task].kind).figures]
    return [
        f"results/figures/{task}/{k}.{ext}" for k in kinds for ext in ("png", "pdf")
    ]
