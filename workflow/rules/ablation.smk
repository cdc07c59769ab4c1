# The option ablation (config key `ablation`, config/ablation.yaml): the variants x seeds
# of the named tasks as one table, mean +- std over seeds per variant, written to
# docs/ablation.md by the reference tables' script (ncaflow.tables.reference.spread).
#
#   snakemake --cores all ablation --configfile config/ablation.yaml
#
# Every model is an ordinary task's (train, evaluate): results/models/<task>/<variant>/.
# The functions and the checked key are in ablation_config.smk.


rule ablation:
    input:
        metrics=ablation_metrics,
    output:
        csv="results/tables/ablation.csv",
        md="docs/ablation.md",
    log:
        "results/logs/ablation.log",
    conda:
        "../envs/ncaflow.yaml"
    params:
        kind="spread",
        by=["task", "option"],
        rows=ablation_rows,
        intro=ABLATION_INTRO,
    script:
        "../scripts/reference_tables.py"


localrules:
    ablation,
