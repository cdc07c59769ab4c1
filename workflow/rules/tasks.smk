"""The config: checked against the schema, then the task table: each task of the config becomes a `Task`, its grid a Paramspace
whose cells read like `hidden~16_fire~0.5`. Each cell is a list of `key=value`
overrides that the rules hand to `ncaflow ... --set`: the hyperparameters themselves
stay in the run configs under config/runs/. Every cell's run config is checked as
`ncaflow train` will check it before any job is scheduled."""

import copy
import functools
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

from ncaflow.config import ConfigError, RunConfig, read_yaml
from ncaflow.tasks import get_task
from ncaflow.tasks.runconfig import build_config


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


# Named targets and rule names that a task name must not shadow.
RESERVED = set(
    "all tables figures animations exports models report download prepare train "
    "evaluate aggregate growth plot overlay animate export reference "
    "reference_datasets reference_evaluations reference_tables reference_figures "
    "reference_runs reference_rollouts reference_ensembles evaluate_with ensemble "
    "evaluations".split()
)


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

    def folds_of(self, cell: str) -> int:
        """How many folds (or seeds) a cell trains: its variant's own count, else the task's."""
        return self.cell_folds.get(cell, self.folds)


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
    """The model keys a flag's data decides (Task.derive_config: a MedMNIST subset's
    channels and classes) as overrides; a `set` or `flag_set` value that contradicts
    them fails the task's check."""
    raw = copy.deepcopy(_run_yaml(entry, spec["run"]))
    data = {
        **(raw.get("data") or {}),
        **{k[5:]: v for k, v in _given(spec, flag).items()},
    }
    derived = {"task": raw.get("task"), "data": {**data, "flag": flag}, "model": {}}
    try:
        get_task(str(raw.get("task"))).derive_config(derived)
    except ConfigError as err:
        stop(f"config key 'tasks.{entry}.flags': {err}")
    return _overrides({f"model.{k}": v for k, v in derived["model"].items()})


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


def _data_keys(overrides: list[str]) -> list[str]:
    sections = ("data", "model")
    return [o for o in overrides if o.split("=", 1)[0].split(".")[0] in sections]


# -- what the jobs are given (functions of wildcards) ------------------------------


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


def train_inputs(wildcards) -> dict:
    task = TASKS[wildcards.task]
    return {"run": task.run, "data": task_data(wildcards)}


def cell_overrides(wildcards) -> list[str]:
    """What every fold of a grid cell is trained with."""
    task = TASKS[wildcards.task]
    if wildcards.cell not in task.cells:
        raise WorkflowError(
            f"task {task.name!r} has no grid cell {wildcards.cell!r}; its cells: "
            f"{', '.join(task.cells)} (the grid under tasks.{task.name} of the config)"
        )
    return ["train.progress=false", *task.fixed, *task.cells[wildcards.cell]]


def train_overrides(wildcards) -> list[str]:
    task = TASKS[wildcards.task]
    sets = cell_overrides(wildcards)
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


def together_groups() -> list[tuple[str, int, list[str]]]:
    """`fold_jobs: together`: (task, fold count, its cells with that many folds), one
    training rule each (a rule's outputs are a fixed list, so one per fold count)."""
    groups: dict[tuple[str, int], list[str]] = {}
    for name, task in TASKS.items():
        for cell in task.cells:
            groups.setdefault((name, task.folds_of(cell)), []).append(cell)
    return [(name, count, cells) for (name, count), cells in groups.items()]


def together_args(folds: int):
    """The `ncaflow train` options of one job training all ``folds`` folds of a cell in
    turn: the options of the separate jobs, with one --out (and --fold or --seed) each.
    """

    def get(wildcards) -> str:
        task = TASKS[wildcards.task]
        args = [f"--set {shlex.quote(o)}" for o in cell_overrides(wildcards)]
        outs = (MODEL_DIR.format(fold=k, **wildcards) for k in range(folds))
        args.append("--out " + " ".join(shlex.quote(o) for o in outs))
        if task.fold_by == "seed":
            args.append(
                "--seed " + " ".join(str(task.base_seed + k) for k in range(folds))
            )
        else:
            path = shlex.quote(f"data/prepared/{task.name}/folds.json")
            args.append(f"--folds {path} --fold " + " ".join(map(str, range(folds))))
        return " ".join(args)

    return get


def together_resource(name: str, folds: int):
    """A together job's resources: one fold's, its runtime times the folds; jobs_per_gpu
    as a profile sets it for `train` (set-resources), so the GPU profiles pack both modes.
    """

    def get(wildcards) -> int:
        if name == "jobs_per_gpu":
            given = workflow.resource_settings.overwrite_resources.get("train", {})
            value = given["jobs_per_gpu"] if "jobs_per_gpu" in given else 0
            return int(getattr(value, "value", value) or 0)  # a Resource, or a number
        value = TASKS[wildcards.task].resources[name]
        return value * folds if name == "runtime" else value

    return get


def data_priority() -> int:
    """The download and prepare jobs' priority: above every training job's (its runtime,
    train.smk), so that each task's data is there (seconds) before the cores are given to
    the long jobs."""
    return 1 + max(
        t.resources["runtime"] * max(t.folds_of(c) for c in t.cells)
        for t in TASKS.values()
    )


def train_resource(name: str):
    def get(wildcards) -> int:
        return TASKS[wildcards.task].resources[name]

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
