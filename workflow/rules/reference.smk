# Reference results (config key `reference`, config/paper.yaml): the README's tables
# of the single reference runs, of the sweeps' models evaluated again with other
# settings (rollouts averaged, mirror) and of the ensembles.  The runs and sweeps are
# ordinary tasks (train, evaluate, aggregate); this file adds the evaluations with
# `ncaflow evaluate --set`, the ensembles (`--model A --model B --seed k`), the three
# tables and the named targets:
#
#   snakemake --cores all reference --configfile config/paper.yaml  # tables + figures
#   snakemake reference_evaluations ...   # every metrics file (trains what is missing)
#
# (targets go before --configfile, which takes every name after it as a config file)
#
# Outputs stay under results/models/ (DVC tracks them with the weights):
#   .../{task}/{cell}/fold{k}/metrics-{evaluation}.json
#   .../{task}/ensembles/{ensemble}/seed{seed}.json


rule evaluate_with:
    input:
        model="results/models/{task}/{cell}/fold{fold}/model.safetensors",
        meta="results/models/{task}/{cell}/fold{fold}/model.json",
        data=task_data,
    output:
        "results/models/{task}/{cell}/fold{fold}/metrics-{evaluation}.json",
    log:
        "results/logs/evaluate/{task}/{cell}/fold{fold}-{evaluation}.log",
    benchmark:
        "results/benchmarks/evaluate/{task}/{cell}/fold{fold}-{evaluation}.tsv"
    wildcard_constraints:
        fold="[0-9]+",
        evaluation="[a-z][a-z0-9_]*",
    conda:
        "../envs/ncaflow.yaml"
    threads: evaluate_resource("threads")
    resources:
        mem_mb=evaluate_resource("mem_mb"),
        runtime=evaluate_resource("runtime"),
    params:
        sets=evaluation_sets,
    shell:
        "ncaflow evaluate --model {input.model:q} --split val --split test "
        "{params.sets:q} --out {output:q} > {log:q} 2>&1"


rule ensemble:
    input:
        models=ensemble_models,
        data=ensemble_data,
    output:
        "results/models/{task}/ensembles/{ensemble}/seed{seed}.json",
    log:
        "results/logs/ensemble/{task}/{ensemble}/seed{seed}.log",
    benchmark:
        "results/benchmarks/ensemble/{task}/{ensemble}/seed{seed}.tsv"
    wildcard_constraints:
        task="[a-z][a-z0-9_]*",
        ensemble="[a-z][a-z0-9_]*",
        seed="[0-9]+",
    conda:
        "../envs/ncaflow.yaml"
    threads: evaluate_resource("threads")
    resources:
        mem_mb=evaluate_resource("mem_mb"),
        runtime=evaluate_resource("runtime"),
    params:
        args=ensemble_args,
    shell:
        "ncaflow evaluate {params.args:q} --seed {wildcards.seed:q} --split val "
        "--split test --out {output:q} > {log:q} 2>&1"


rule reference_runs:
    input:
        metrics=table_files("runs"),
        histories=run_histories,
    output:
        csv="results/tables/reference/runs.csv",
        md="results/tables/reference/runs.md",
    log:
        "results/logs/reference/runs.log",
    conda:
        "../envs/ncaflow.yaml"
    params:
        kind="runs",
        rows=table_rows("runs"),
    script:
        "../scripts/reference_tables.py"


rule reference_rollouts:
    input:
        metrics=table_files("evaluations"),
    output:
        csv="results/tables/reference/evaluations.csv",
        md="results/tables/reference/evaluations.md",
    log:
        "results/logs/reference/evaluations.log",
    conda:
        "../envs/ncaflow.yaml"
    params:
        kind="spread",
        by=["task", "cell", "evaluation"],
        rows=table_rows("evaluations"),
    script:
        "../scripts/reference_tables.py"


rule reference_ensembles:
    input:
        metrics=table_files("ensembles"),
    output:
        csv="results/tables/reference/ensembles.csv",
        md="results/tables/reference/ensembles.md",
    log:
        "results/logs/reference/ensembles.log",
    conda:
        "../envs/ncaflow.yaml"
    params:
        kind="spread",
        by=["ensemble", "members", "evaluation"],
        rows=table_rows("ensembles"),
    script:
        "../scripts/reference_tables.py"


localrules:
    reference_runs,
    reference_rollouts,
    reference_ensembles,


# `snakemake reference`: the reference tasks' tables and figures and the three tables above.
rule reference:
    input:
        reference_targets(),


rule reference_tables:
    input:
        reference_table_targets(),
        [f for task in reference_tasks() for f in table_targets(task)],


rule reference_figures:
    input:
        [f for task in reference_tasks() for f in figure_targets(task)],


# The data of the reference tasks (scripts/pretrained.sh fetches it before touching).
rule reference_datasets:
    input:
        [f for task in reference_tasks() for f in data_of(task)],


# Every metrics file of the reference results: what `dvc pull` restores.
rule reference_evaluations:
    input:
        reference_evaluation_targets(),


# Every metrics file of every task (scripts/pretrained.sh marks them up to date).
rule evaluations:
    input:
        [m for task in TASKS for m in metrics_of(task)],
