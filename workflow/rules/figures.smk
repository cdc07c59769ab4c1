# Figures (PNG and PDF): per task fold box plots and learning curves, and where the
# grid has two or more cells a grid heatmap and parameters vs metric; a growth strip for growing tasks and
# segmentation overlays with uncertainty, both of the best model.


localrules:
    plot,
    plot_grid,
    growth,
    overlay,


rule plot:
    input:
        folds="results/tables/{task}_folds.csv",
        histories=task_histories,
    output:
        report(
            multiext("results/figures/{task}/folds", ".png", ".pdf"),
            caption="../report/folds.rst",
            category="Figures",
            labels={"task": "{task}", "figure": "folds"},
        ),
        report(
            multiext("results/figures/{task}/curves", ".png", ".pdf"),
            caption="../report/curves.rst",
            category="Figures",
            labels={"task": "{task}", "figure": "curves"},
        ),
    log:
        "results/logs/plot/{task}.log",
    benchmark:
        "results/benchmarks/plot/{task}.tsv"
    conda:
        "../envs/ncaflow.yaml"
    params:
        metric=select_metric,
        mode=select_mode,
        dir=out_dir("results/figures/{task}/folds"),
    shell:
        "ncaflow figures summary --folds-csv {input.folds:q} --select {params.metric:q} "
        "--mode {params.mode:q} --out-dir {params.dir:q} --only folds curves > {log:q} 2>&1"


rule plot_grid:
    """The figures that compare grid cells: only for a task whose grid has two or more."""
    input:
        folds="results/tables/{task}_folds.csv",
    output:
        report(
            multiext("results/figures/{task}/grid", ".png", ".pdf"),
            caption="../report/grid.rst",
            category="Figures",
            labels={"task": "{task}", "figure": "grid"},
        ),
        report(
            multiext("results/figures/{task}/params", ".png", ".pdf"),
            caption="../report/params.rst",
            category="Figures",
            labels={"task": "{task}", "figure": "params"},
        ),
    log:
        "results/logs/plot_grid/{task}.log",
    benchmark:
        "results/benchmarks/plot_grid/{task}.tsv"
    conda:
        "../envs/ncaflow.yaml"
    params:
        metric=select_metric,
        mode=select_mode,
        dir=out_dir("results/figures/{task}/grid"),
    shell:
        "ncaflow figures summary --folds-csv {input.folds:q} --select {params.metric:q} "
        "--mode {params.mode:q} --out-dir {params.dir:q} --only grid params > {log:q} 2>&1"


rule growth:
    input:
        best="results/tables/{task}.best",
    output:
        report(
            multiext("results/figures/{task}/growth", ".png", ".pdf"),
            caption="../report/growth.rst",
            category="Figures",
            labels={"task": "{task}", "figure": "growth"},
        ),
    log:
        "results/logs/growth/{task}.log",
    benchmark:
        "results/benchmarks/growth/{task}.tsv"
    conda:
        "../envs/ncaflow.yaml"
    shell:
        'ncaflow figures growth --model "$(cat {input.best:q})" '
        "--out results/figures/{wildcards.task:q}/growth > {log:q} 2>&1"


rule overlay:
    input:
        best="results/tables/{task}.best",
        data=task_data,
    output:
        report(
            multiext("results/figures/{task}/overlay", ".png", ".pdf"),
            caption="../report/overlay.rst",
            category="Figures",
            labels={"task": "{task}", "figure": "overlay"},
        ),
    log:
        "results/logs/overlay/{task}.log",
    benchmark:
        "results/benchmarks/overlay/{task}.tsv"
    conda:
        "../envs/ncaflow.yaml"
    shell:
        'ncaflow figures overlay --model "$(cat {input.best:q})" '
        "--out results/figures/{wildcards.task:q}/overlay > {log:q} 2>&1"


rule figures:
    input:
        all_of(figure_targets),
