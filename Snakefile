# ncaflow: one config -> every trained NCA, table, figure, animation and C header.
#
#   snakemake --cores all                                  # the default run (config/config.yaml)
#   snakemake --cores all --configfile config/paper.yaml   # another config replaces the default
#   snakemake --cores 2 tables | figures | report | <task> # named targets
#   snakemake --cores all reference --configfile config/paper.yaml   # the README's reference results
#
# config/README.md explains the config; workflow/rules/ holds one file per stage.
from snakemake.utils import min_version

min_version("9.0")


# A config given with --configfile replaces config/config.yaml instead of being
# merged into it (merging would mix two grids); --config key=value still merges.
if not workflow.overwrite_configfiles:

    configfile: "config/config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/tasks.smk"


# A task name is one path component (the schema allows [a-z0-9_]); without this,
# `results/tables/{task}.csv` would also match the reference tables' subfolder.
wildcard_constraints:
    task="[a-z0-9_]+",


validate_config(config, "workflow/schemas/config.schema.yaml")
TASKS = build_tasks(config)


include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/aggregate.smk"
include: "workflow/rules/figures.smk"
include: "workflow/rules/export.smk"
include: "workflow/rules/reference_config.smk"
include: "workflow/rules/reference.smk"
include: "workflow/rules/ablation_config.smk"
include: "workflow/rules/ablation.smk"


rule all:
    default_target: True
    input:
        all_of(task_targets),
        reference_targets(),
        "results/report.html",


onsuccess:
    note_table_drift()


# `snakemake <task>`: everything of one task (its name in the config).
for _task in TASKS:

    rule:
        name:
            _task
        input:
            task_targets(_task),
