# The best model of each task as an animated GIF of one rollout and as a C99
# header (with its footprint JSON beside it); then the HTML report.


localrules:
    animate,
    report,


rule animate:
    input:
        best="results/tables/{task}.best",
        data=task_data,
    output:
        report(
            "results/animations/{task}.gif",
            caption="../report/animation.rst",
            category="Animations",
            labels={"task": "{task}"},
        ),
    log:
        "results/logs/animate/{task}.log",
    benchmark:
        "results/benchmarks/animate/{task}.tsv"
    conda:
        "../envs/ncaflow.yaml"
    params:
        args=animate_args,
    shell:
        'ncaflow animate --model "$(cat {input.best:q})" --out {output:q} {params.args} '
        "> {log:q} 2>&1"


rule export:
    input:
        best="results/tables/{task}.best",
    output:
        header="results/export/{task}/{task}.h",
        footprint="results/export/{task}/{task}.json",
    log:
        "results/logs/export/{task}.log",
    benchmark:
        "results/benchmarks/export/{task}.tsv"
    conda:
        "../envs/ncaflow.yaml"
    threads: other_resource("threads")
    resources:
        mem_mb=other_resource("mem_mb"),
        runtime=other_resource("runtime"),
    params:
        args=export_args,
    shell:
        'ncaflow export c "$(cat {input.best:q})" --out {output.header:q} {params.args} '
        "> {log:q} 2>&1"


rule cortex_m:
    """The best Kvasir-SEG and BreastMNIST models on an emulated Cortex-M4 (QEMU): flash, RAM,
    instructions per step and agreement with PyTorch (README's table); needs
    gcc-arm-none-eabi and qemu-system-arm, so it is not part of `all`."""
    input:
        segmenter="results/tables/kvasir.best",
        classifier="results/tables/breastmnist.best",
    output:
        json="results/tables/cortex-m4.json",
        table="results/tables/cortex-m4.md",
    log:
        "results/logs/cortex_m.log",
    benchmark:
        "results/benchmarks/cortex_m.tsv"
    conda:
        "../envs/ncaflow.yaml"
    shell:
        'python scripts/cortex_m.py --out {output.json:q} --segmenter "$(cat {input.segmenter:q})" '
        '--classifier "$(cat {input.classifier:q})" > {log:q} 2>&1 && '
        "python scripts/cortex_m.py --table {output.json:q} > {output.table:q}"


rule animations:
    input:
        all_of(animation_targets),


rule exports:
    input:
        all_of(export_targets),


# `snakemake datasets`: every task's data and folds (scripts/pretrained.sh runs it).
rule datasets:
    input:
        [f for task in TASKS for f in data_of(task)],


rule models:
    input:
        [m for task in TASKS for m in models_of(task)],


rule report:
    input:
        all_of(table_targets),
        all_of(figure_targets),
        all_of(animation_targets),
    output:
        "results/report.html",
    log:
        "results/logs/report.log",
    conda:
        "../envs/ncaflow.yaml"
    params:
        args=snakemake_args,
    shell:
        "snakemake tables figures animations --nolock --report {output:q} {params.args} "
        "> {log:q} 2>&1"
