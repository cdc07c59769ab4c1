"""Snakemake script of the reference table rules: the README's reference tables.

`params.kind` says which table: `runs` (one row per reference run, from its model
folder), or `spread` (evaluations, ensembles: mean ± std of each group of
`params.by`; also the ablation's docs/ablation.md, after `params.intro`).  `params.rows`
holds one dict per input file (what the file is: run, task, cell, setting, seed ...), in
the order of the inputs.
"""

import sys
from pathlib import Path

import pandas as pd

from ncaflow.tables.reference import (
    read_metrics,
    run_row,
    runs_markdown,
    spread,
    spread_markdown,
    write,
)

snakemake = globals()["snakemake"]  # injected by Snakemake

METRICS = ["val_acc", "val_auc", "test_acc", "test_auc", "test_f1"]


def tables(files: list[str], described: list[dict]) -> tuple[pd.DataFrame, str]:
    if snakemake.params.kind == "runs":
        rows = [
            run_row(d["run"], Path(path).parent) for d, path in zip(described, files, strict=True)
        ]
        return pd.DataFrame(rows), runs_markdown(rows)
    # the description wins over a metrics file's own keys (an ensemble's member list)
    rows = [{**read_metrics(path), **d} for d, path in zip(described, files, strict=True)]
    by = list(snakemake.params.by)
    table = spread(rows, by, METRICS)
    return table, spread_markdown(table, by, METRICS)


with open(snakemake.log[0], "w") as log:
    try:
        table, text = tables(list(snakemake.input.metrics), snakemake.params.rows)
    except (ValueError, KeyError) as err:
        print(f"reference table {snakemake.output.md}: {err}", file=log)
        sys.exit(1)
    write(snakemake.output.csv, table.to_csv(index=False, float_format="%.6g"))
    intro = getattr(snakemake.params, "intro", "")  # the ablation's docs/ablation.md
    write(snakemake.output.md, intro + text)
    print(text, file=log)
