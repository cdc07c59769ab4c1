"""Snakemake script of the `download` rule: fetch one task's data into data/raw.

The task's own loader does the work (mirror, cache or download, checksums,
atomic writes); this script only runs it and records what was fetched in a
small manifest, the rule's output.  The mirror comes from the workflow config
key `mirror`, else from $NCAFLOW_DATA_MIRROR.  It is read here, not passed as a
rule parameter, so that moving the mirror does not re-run anything.
"""

import json
import os
import sys
from pathlib import Path

from ncaflow.config import ConfigError, load_config
from ncaflow.io import atomic_write
from ncaflow.tasks import get_task

snakemake = globals()["snakemake"]  # injected by Snakemake

with open(snakemake.log[0], "w") as log:
    sys.stdout = sys.stderr = log
    mirror = snakemake.config.get("mirror") or os.environ.get("NCAFLOW_DATA_MIRROR")
    overrides = [*snakemake.params.sets, "data.folds=null"]
    if mirror:
        overrides.append(f"data.mirror={Path(mirror).resolve()}")
    config = load_config(snakemake.input.run, overrides)
    task = get_task(config.task)(config=config, device="cpu")
    task.setup()  # fetches every file the task reads
    try:
        checksum = task.fold_pool()[2]
    except ConfigError:
        checksum = None  # a task without a train/val pool (growing)
    data = {k: v for k, v in config.data.items() if k not in ("mirror", "folds", "fold")}
    manifest = {"name": snakemake.wildcards.task, "task": config.task, "data": data}
    manifest["pool_checksum"] = checksum
    manifest["data_checksum"] = task.data_checksum()  # any change re-runs this task's jobs
    text = json.dumps(manifest, indent=2) + "\n"
    atomic_write(snakemake.output[0], lambda tmp: tmp.write_text(text))
    print(f"{snakemake.wildcards.task}: data ready in {task.data.root} (pool {checksum})")
