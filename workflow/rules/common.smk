"""Shared helpers: config validation, the task table (grid cells per task) and the
params/resources functions the rules call.  Rules hold no logic of their own.

A task of the config becomes a `Task` below; its grid becomes a Paramspace whose
cells read like `hidden~16_fire~0.5`.  Each cell is a list of `key=value`
overrides that the rules hand to `ncaflow ... --set`: the hyperparameters
themselves stay in the run configs under config/runs/.
"""

import copy
import functools
import hashlib
import itertools
import os
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

import jsonschema
import pandas as pd
import yaml
from snakemake.exceptions import WorkflowError
from snakemake.io import PeriodicityDetector
from snakemake.utils import Paramspace, validate

from ncaflow.config import ConfigError, RunConfig, build_config, read_yaml
from ncaflow.tasks import get_task

# Named targets and rule names that a task name must not shadow.
RESERVED = {
    "all",
    "tables",
    "figures",
    "animations",
    "exports",
    "models",
    "report",
    "download",
    "prepare",
    "train",
    "evaluate",
    "aggregate",
    "growth",
    "plot",
    "overlay",
    "animate",
    "export",
    "reference",
    "reference_datasets",
    "reference_evaluations",
    "reference_tables",
    "reference_figures",
    "reference_runs",
    "reference_rollouts",
    "reference_ensembles",
    "evaluate_with",
    "ensemble",
    "evaluations",
}

# workflow/envs/ncaflow.yaml installs the package from here (pip expands ${NCAFLOW_ROOT}).
os.environ.setdefault("NCAFLOW_ROOT", str(Path(workflow.basedir).resolve()))


# -- validation -----------------------------------------------------------------


def stop(message: str) -> NoReturn:
    """End `snakemake` before it schedules any job: one line on stderr, exit code 1."""
    print(f"ncaflow workflow: invalid config: {message}", file=sys.stderr)
    raise SystemExit(1)


def _key(path) -> str:
    return ".".join(str(p) for p in path) or "<root>"


def _explain(err: jsonschema.ValidationError) -> str:
    """One line naming the dotted config key, what is wrong and what is allowed."""
    where = _key(err.absolute_path)
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


# -- the task table ---------------------------------------------------------------


def _yaml_value(value) -> str:
    """A value as `ncaflow --set` parses it back (YAML; floats keep their dot)."""
    text = yaml.safe_dump(value, default_flow_style=True, width=1 << 16).strip()
    return text.removesuffix("...").strip()


def _overrides(mapping: dict) -> list[str]:
    """`key=value` strings, sorted by key so that reordering a config re-runs nothing."""
    return [f"{key}={_yaml_value(mapping[key])}" for key in sorted(mapping)]


@dataclass
class Task:
    name: str  # instance name, used in paths
    run: str  # base run config
    kind: str  # library task: growing, selfclass, classification, segmentation
    folds: int
    fold_by: str
    fixed: list[str]  # overrides of every cell
    cells: dict[str, list[str]]  # cell name -> grid overrides
    aliases: list[str]
    metric: str  # selection metric (the run config's early-stopping metric)
    mode: str
    base_seed: int
    resources: dict = field(default_factory=dict)
    cell_folds: dict[str, int] = field(
        default_factory=dict
    )  # variants' own fold counts


# a grid value's text in a folder name (Snakemake's paths stay short)
GRID_VALUE_CHARS = 40


def _check_grid_values(entry: str, grid: dict) -> None:
    """Each grid value becomes part of a folder name: short, and not a text that
    Snakemake takes for a runaway repetition (PeriodicWildcardError)."""
    periodic = PeriodicityDetector()
    for alias, spec in grid.items():
        for value in spec["values"]:
            text = str(value)
            shown = (
                text if len(text) <= 30 else f"{text[:20]}... ({len(text)} characters)"
            )
            if len(text) > GRID_VALUE_CHARS or periodic.is_periodic(text) is not None:
                stop(
                    f"config key 'tasks.{entry}.grid.{alias}.values': {shown!r} cannot be "
                    f"part of a folder name (at most {GRID_VALUE_CHARS} characters, no text "
                    "repeated 20 times); give a shorter value, or put it in the run config"
                )


def _grid_cells(grid: dict) -> dict[str, list[str]]:
    """Paramspace over the grid: {"hidden~8_fire~0.5": ["model.hidden_channels=8", ...]}."""
    if not grid:
        return {"base": []}
    aliases = list(grid)
    rows = list(itertools.product(*(grid[a]["values"] for a in aliases)))
    frame = pd.DataFrame(rows, columns=aliases, dtype=object)
    space = Paramspace(frame, filename_params="*", param_sep="~", filename_sep="_")
    cells = {}
    for name, row in zip(space.instance_patterns, rows):
        cells[name] = _overrides({grid[a]["key"]: v for a, v in zip(aliases, row)})
    return cells


@functools.cache
def _run_yaml(entry: str, run: str) -> dict:
    """A run config file, parsed once: a grid checks every cell against it (parsing it per
    cell was half of `snakemake -n` on a 1,000-cell grid)."""
    if not Path(run).is_file():
        stop(f"config key 'tasks.{entry}.run': {run} does not exist")
    try:
        return read_yaml(run)
    except ConfigError as err:
        stop(f"config key 'tasks.{entry}.run': {err}")


def _check_run(
    entry: str, run: str, overrides: list[str], where: str, note: str = ""
) -> RunConfig:
    """Build and validate the run config exactly as `ncaflow train` will (keys, types,
    ranges, the task's data section); stop with one line on the first error."""
    try:
        return build_config(_run_yaml(entry, run), overrides)
    except ConfigError as err:
        stop(f"config key '{where}'{note}: {run}: {err}")


def _flag_keys(entry: str, spec: dict, flag: str) -> list[str]:
    """A MedMNIST flag's channels and classes (from medmnist's INFO) as overrides; a
    `set` or `flag_set` value that contradicts them fails the task's check."""
    from ncaflow.tasks.classification import info_keys

    raw = copy.deepcopy(_run_yaml(entry, spec["run"]))
    data = {
        **(raw.get("data") or {}),
        **{k[5:]: v for k, v in _given(spec, flag).items()},
    }
    try:
        keys = info_keys(flag, str(data.get("readout", "vote")))
    except ConfigError as err:
        stop(f"config key 'tasks.{entry}.flags': {err}")
    return _overrides(keys)


def _given(spec: dict, flag: str) -> dict:
    """The data.* values a task's `set` and `flag_set` give (the later wins)."""
    both = {**spec["set"], **spec["flag_set"].get(flag, {})}
    return {k: v for k, v in both.items() if k.startswith("data.")}


def build_tasks(config: dict) -> dict[str, Task]:
    tasks = {}
    for entry, spec in config["tasks"].items():
        if not spec["enabled"]:
            continue
        flags = spec.get("flags") or [None]
        for flag in flags:
            name = flag or entry
            if name in RESERVED:
                stop(
                    f"config key 'tasks.{entry}': the name {name!r} is taken by a rule; "
                    f"choose another (taken: {sorted(RESERVED)})"
                )
            if name in tasks:
                stop(f"config key 'tasks.{entry}': task {name!r} defined twice")
            unused = set(spec["flag_set"]) - set(spec.get("flags") or [])
            if unused:
                stop(
                    f"config key 'tasks.{entry}.flag_set': {sorted(unused)[0]!r} is not "
                    f"one of its flags {spec.get('flags') or []}; remove it or add the flag"
                )
            fixed = _overrides(spec["set"])
            where = f"tasks.{entry}.set"
            if flag is not None:
                fixed = _flag_keys(entry, spec, flag) + fixed
                fixed += [f"data.flag={flag}", f"name={flag}"]
                fixed += _overrides(spec["flag_set"].get(flag, {}))
                where = f"tasks.{entry} (flag {flag}: set, flag_set)"
            base = _check_run(entry, spec["run"], fixed, where)
            _check_run(  # the download and prepare jobs see the data and model keys only
                entry,
                spec["run"],
                _data_keys(fixed),
                where,
                " (as the download job reads it: data.* and model.* keys only; "
                "give the others in the run config)",
            )
            if spec["fold_by"] == "seed":  # fold k trains with train.seed + k
                last = f"train.seed={base.train.seed + spec['folds'] - 1}"
                _check_run(entry, spec["run"], [*fixed, last], f"tasks.{entry}.folds")
            _check_grid_values(entry, spec["grid"])
            cells = _variant_cells(entry, spec) or _grid_cells(spec["grid"])
            for cell, grid in cells.items():
                _check_run(
                    entry, spec["run"], fixed + grid, f"tasks.{entry}.grid ({cell})"
                )
            resources = {**config["resources"]["train"], **spec["resources"]}
            tasks[name] = Task(
                name=name,
                run=spec["run"],
                kind=base.task,
                folds=spec["folds"],
                fold_by=spec["fold_by"],
                fixed=fixed,
                cells=cells,
                aliases=list(spec["grid"]),
                metric=spec.get("select", {}).get("metric")
                or base.train.early_stopping.metric,
                mode=spec.get("select", {}).get("mode")
                or base.train.early_stopping.mode,
                base_seed=base.train.seed,
                resources=resources,
                cell_folds=spec["variant_folds"],
            )
    if not tasks:
        stop("config key 'tasks': no task is enabled; set enabled: true on one")
    return tasks


def _variant_cells(entry: str, spec: dict) -> dict[str, list[str]]:
    """Named variants (`tasks.<entry>.variants`): {"big": ["model.hidden_width=192", ...]}.
    A task has either variants or a grid; `variant_folds` names variants only."""
    variants = spec["variants"]
    if variants and spec["grid"]:
        stop(f"config key 'tasks.{entry}': give either 'grid' or 'variants', not both")
    unknown = sorted(set(spec["variant_folds"]) - set(variants))
    if unknown:
        stop(
            f"config key 'tasks.{entry}.variant_folds': {unknown} are not variants of "
            f"the task; name one of {sorted(variants)}"
        )
    return {name: _overrides(sets) for name, sets in variants.items()}


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


def _data_keys(overrides: list[str]) -> list[str]:
    sections = ("data", "model")
    return [o for o in overrides if o.split("=", 1)[0].split(".")[0] in sections]


def data_overrides(task: Task) -> list[str]:
    """The overrides that decide which data a task reads (and whether its model fits it)."""
    return _data_keys(task.fixed)


def data_sets(wildcards) -> str:
    return " ".join(
        f"--set {shlex.quote(o)}" for o in data_overrides(TASKS[wildcards.task])
    )


def data_set_list(wildcards) -> list[str]:
    return data_overrides(TASKS[wildcards.task])


def fold_count(wildcards) -> int:
    return TASKS[wildcards.task].folds


def data_of(task: str) -> list[str]:
    """What a task's jobs read besides models: its download manifest, and its
    folds file when it cross-validates over its data (saved models point at it)."""
    t = TASKS[task]
    files = [f"data/raw/manifests/{t.name}.json"]
    if t.fold_by == "data":
        files.append(f"data/prepared/{t.name}/folds.json")
    return files


def task_data(wildcards) -> list[str]:
    return data_of(wildcards.task)


def train_inputs(wildcards) -> dict:
    task = TASKS[wildcards.task]
    return {"run": task.run, "data": task_data(wildcards)}


def train_overrides(wildcards) -> list[str]:
    task = TASKS[wildcards.task]
    if wildcards.cell not in task.cells:
        raise WorkflowError(f"task {task.name!r} has no grid cell {wildcards.cell!r}")
    sets = ["train.progress=false", *task.fixed, *task.cells[wildcards.cell]]
    if task.fold_by == "seed":
        sets.append(f"train.seed={task.base_seed + int(wildcards.fold)}")
    return sets


def train_args(wildcards) -> str:
    task = TASKS[wildcards.task]
    args = [f"--set {shlex.quote(o)}" for o in train_overrides(wildcards)]
    if task.fold_by == "data":
        folds = shlex.quote(f"data/prepared/{task.name}/folds.json")
        args.append(f"--folds {folds} --fold {int(wildcards.fold)}")
    return " ".join(args)


def resume_key(wildcards) -> str:
    """Hash of everything a training job reads from its config: a checkpoint left by an
    interrupted job is only resumed when the key matches."""
    task = TASKS[wildcards.task]
    h = hashlib.sha256(Path(task.run).read_bytes())
    h.update(train_args(wildcards).encode())
    return h.hexdigest()[:16]


def train_resource(name: str):
    def get(wildcards) -> int:
        return TASKS[wildcards.task].resources[name]

    return get


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


def animate_args(wildcards) -> str:
    steps = config["animation_steps"]
    return f"--steps {int(steps)}" if steps else ""


def export_args(wildcards) -> str:
    return "--int8" if config["export_int8"] else ""


def snakemake_args(wildcards) -> str:
    """The config options of this run, for the nested `snakemake --report`."""
    args = [f"--snakefile {shlex.quote(str(workflow.main_snakefile))}"]
    if workflow.overwrite_configfiles:
        files = " ".join(shlex.quote(str(f)) for f in workflow.overwrite_configfiles)
        args.append(f"--configfile {files}")
    given = workflow.config_settings.config_args
    if given:  # the `--config key=value` arguments as given, each quoted for the shell
        items = [given] if isinstance(given, str) else list(given)
        args.append("--config " + " ".join(shlex.quote(str(a)) for a in items))
    return " ".join(args)


# -- targets ------------------------------------------------------------------------


def table_targets(task: str) -> list[str]:
    return [f"results/tables/{task}.{ext}" for ext in ("csv", "md", "tex")]


FIGURES = ("grid", "folds", "curves", "params")


def figure_targets(task: str) -> list[str]:
    """The summary figures, and the per-model ones its library task draws (Task.figures:
    "growth", "overlay", each a rule of figures.smk)."""
    kinds = [*FIGURES, *get_task(TASKS[task].kind).figures]
    return [
        f"results/figures/{task}/{k}.{ext}" for k in kinds for ext in ("png", "pdf")
    ]


def animation_targets(task: str) -> list[str]:
    return [f"results/animations/{task}.gif"]


def export_targets(task: str) -> list[str]:
    return [f"results/export/{task}/{task}.h", f"results/export/{task}/{task}.json"]


def task_targets(task: str) -> list[str]:
    return (
        table_targets(task)
        + figure_targets(task)
        + animation_targets(task)
        + export_targets(task)
    )


def all_of(targets) -> list[str]:
    return [path for task in TASKS for path in targets(task)]


# -- reference results (config key `reference`; rules in reference.smk) --------------
# REFERENCE is the checked section (Snakefile: check_reference).


def _reference_stop(key: str, text: str) -> NoReturn:
    stop(f"config key 'reference.{key}': {text}")


def _check_member(key: str, task: str, member: str) -> None:
    cell, fold = member.split("/")
    fold = fold.removeprefix("fold")
    if cell not in TASKS[task].cells:
        _reference_stop(
            key, f"task {task!r} has no cell {cell!r}; have {sorted(TASKS[task].cells)}"
        )
    folds = TASKS[task].cell_folds.get(cell, TASKS[task].folds)
    if int(fold) >= folds:
        _reference_stop(
            key, f"{member}: cell {cell!r} of {task!r} has folds 0-{folds - 1}"
        )


def check_reference(ref: dict) -> dict:
    """Every task, cell, fold and evaluation the section names must exist; returns it."""
    for key in ("runs", "sweeps"):
        for i, task in enumerate(ref.get(key, [])):
            if task not in TASKS:
                _reference_stop(
                    f"{key}[{i}]",
                    f"{task!r} is not an enabled task; have {sorted(TASKS)}",
                )
    known = set(ref.get("evaluations", {}))
    for task, spec in ref.get("rollouts", {}).items():
        if task not in TASKS:
            _reference_stop(f"rollouts.{task}", "not an enabled task")
        for cell in spec["cells"]:
            _check_member(f"rollouts.{task}.cells", task, f"{cell}/fold0")
        for name in spec["evaluations"]:
            if name not in known:
                _reference_stop(
                    f"rollouts.{task}.evaluations",
                    f"{name!r} is not in reference.evaluations {sorted(known)}",
                )
    for name, spec in ref.get("ensembles", {}).items():
        key = f"ensembles.{name}"
        if spec["task"] not in TASKS:
            _reference_stop(f"{key}.task", f"{spec['task']!r} is not an enabled task")
        for member in spec["members"]:
            _check_member(f"{key}.members", spec["task"], member)
        if spec["evaluation"] not in known:
            _reference_stop(
                f"{key}.evaluation", f"not in reference.evaluations {sorted(known)}"
            )
    return ref


def reference_tasks() -> list[str]:
    return list(
        dict.fromkeys([*REFERENCE.get("runs", []), *REFERENCE.get("sweeps", [])])
    )


def evaluation_sets(wildcards) -> list[str]:
    """`--set key=value` arguments of one named evaluation (quoted by the rule)."""
    sets = REFERENCE["evaluations"][wildcards.evaluation]
    return [arg for item in _overrides(sets) for arg in ("--set", item)]


def ensemble_spec(wildcards) -> dict:
    spec = REFERENCE["ensembles"].get(wildcards.ensemble)
    if spec is None or spec["task"] != wildcards.task:
        raise WorkflowError(
            f"no ensemble {wildcards.ensemble!r} of task {wildcards.task!r}"
        )
    return spec


def ensemble_models(wildcards) -> list[str]:
    spec = ensemble_spec(wildcards)
    return [
        f"results/models/{spec['task']}/{m}/model.safetensors" for m in spec["members"]
    ]


def ensemble_data(wildcards) -> list[str]:
    return data_of(ensemble_spec(wildcards)["task"])


def ensemble_args(wildcards) -> list[str]:
    """`--model A --model B --set ...` of one ensemble (quoted by the rule)."""
    spec = ensemble_spec(wildcards)
    models = [arg for m in ensemble_models(wildcards) for arg in ("--model", m)]
    sets = _overrides(REFERENCE["evaluations"][spec["evaluation"]])
    return models + [arg for item in sets for arg in ("--set", item)]


def _run_files() -> list[tuple[dict, str]]:
    out = []
    for task in REFERENCE.get("runs", []):
        folder = MODEL_DIR.format(task=task, cell=next(iter(TASKS[task].cells)), fold=0)
        out.append(({"run": task}, f"{folder}/metrics.json"))
    return out


def _evaluation_files() -> list[tuple[dict, str]]:
    """(what, metrics file) of every re-evaluated model; 'as trained' is metrics.json."""
    out = []
    for task, spec in REFERENCE.get("rollouts", {}).items():
        for cell in spec["cells"]:
            for fold in range(TASKS[task].cell_folds.get(cell, TASKS[task].folds)):
                folder = MODEL_DIR.format(task=task, cell=cell, fold=fold)
                for name in ["as trained", *spec["evaluations"]]:
                    path = (
                        "metrics.json"
                        if name == "as trained"
                        else f"metrics-{name}.json"
                    )
                    what = {"task": task, "cell": cell, "evaluation": name}
                    out.append(({**what, "seed": fold}, f"{folder}/{path}"))
    return out


def _ensemble_files() -> list[tuple[dict, str]]:
    out = []
    for name, spec in REFERENCE.get("ensembles", {}).items():
        for seed in spec["seeds"]:
            what = {"ensemble": name, "members": " + ".join(spec["members"])}
            what.update(evaluation=spec["evaluation"], seed=seed)
            path = f"results/models/{spec['task']}/ensembles/{name}/seed{seed}.json"
            out.append((what, path))
    return out


def run_histories(wildcards) -> list[str]:
    return [str(Path(p).parent / "history.csv") for _, p in _run_files()]


REFERENCE_TABLES = {  # results/tables/reference/<name>.csv|md
    "runs": _run_files,
    "evaluations": _evaluation_files,
    "ensembles": _ensemble_files,
}


def table_files(name: str):
    def get(wildcards) -> list[str]:
        return [path for _, path in REFERENCE_TABLES[name]()]

    return get


def table_rows(name: str):
    def get(wildcards) -> list[dict]:
        return [what for what, _ in REFERENCE_TABLES[name]()]

    return get


def reference_table_targets() -> list[str]:
    made = [n for n, files in REFERENCE_TABLES.items() if files()]
    return [
        f"results/tables/reference/{n}.{ext}" for n in made for ext in ("csv", "md")
    ]


def reference_targets() -> list[str]:
    """What `snakemake reference` (and `snakemake` itself) makes of the section."""
    tasks = reference_tasks()
    return (
        reference_table_targets()
        + [f for task in tasks for f in table_targets(task)]
        + [f for task in tasks for f in figure_targets(task)]
    )


def reference_evaluation_targets() -> list[str]:
    metrics = [m for task in reference_tasks() for m in metrics_of(task)]
    extra = [p for files in REFERENCE_TABLES.values() for _, p in files()]
    return list(dict.fromkeys(metrics + extra))


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
