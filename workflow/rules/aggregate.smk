# Tables: per task, mean +- std over folds of every metric, one row per grid
# cell; the best cell is chosen on the validation metric only.  `{task}.best`
# names the best model (best fold of the best cell) for the figures, the
# animation and the export.


rule aggregate:
    input:
        task_metrics,
    output:
        csv=report(
            "results/tables/{task}.csv",
            caption="../report/table.rst",
            category="Tables",
            labels={"task": "{task}", "table": "mean +- std over folds"},
        ),
        md="results/tables/{task}.md",
        tex="results/tables/{task}.tex",
        folds="results/tables/{task}_folds.csv",
        best="results/tables/{task}.best",
    log:
        "results/logs/aggregate/{task}.log",
    benchmark:
        "results/benchmarks/aggregate/{task}.tsv"
    conda:
        "../envs/ncaflow.yaml"
    threads: other_resource("threads")
    resources:
        mem_mb=other_resource("mem_mb"),
        runtime=other_resource("runtime"),
    params:
        metric=select_metric,
        mode=select_mode,
    shell:
        "ncaflow aggregate {input:q} --task {wildcards.task:q} --select {params.metric:q} "
        "--mode {params.mode:q} --csv {output.csv:q} --md {output.md:q} --tex {output.tex:q} "
        "--folds-csv {output.folds:q} --best {output.best:q} > {log:q} 2>&1"


rule tables:
    input:
        all_of(table_targets),
