"""The `reference` section of the config (config/paper.yaml; rules in reference.smk):
checked before any job, and the evaluations, ensembles and tables it asks for. REFERENCE
is the checked section."""


def _reference_stop(key: str, text: str) -> NoReturn:
    stop(f"config key 'reference.{key}': {text}")


def _check_member(key: str, task: str, member: str) -> None:
    cell, fold = member.split("/")
    fold = fold.removeprefix("fold")
    if cell not in TASKS[task].cells:
        _reference_stop(
            key, f"task {task!r} has no cell {cell!r}; have {sorted(TASKS[task].cells)}"
        )
    folds = TASKS[task].folds_of(cell)
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
            for fold in range(TASKS[task].folds_of(cell)):
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


REFERENCE = check_reference(config["reference"])
