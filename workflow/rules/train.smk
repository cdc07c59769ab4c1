# Training: one job per task x grid cell x fold, or with `fold_jobs: together` one job per
# task x grid cell that trains the cell's folds one after another in one process (start-up,
# data and compiled kernels paid once; each fold's files are still its own targets).
#
# Outputs are the files `ncaflow train` writes last (model.* atomically, after
# last.* and history.csv), never the folder: a killed job leaves checkpoint.safetensors
# behind, which is not an output, so Snakemake keeps it and the re-started job
# resumes from it -- unless the job's config changed since (`--restart-changed`).
# A together job that is killed resumes its unfinished fold the same way; Snakemake
# removes the folds it had finished, and they are trained again (same bytes on a CPU).
#
# A training job's priority is its runtime resource: the longest jobs start first and the
# short ones fill the cores at the end (on the default config's 2 cores, Snakemake's own
# order left one core idle for the last two minutes).

import re

TRAIN_FILES = {
    "model": "model.safetensors",
    "meta": "model.json",
    "last": "last.safetensors",
    "last_meta": "last.json",
    "history": "history.csv",
}
# the GPU slot claim of a job whose `jobs_per_gpu` resource is N >= 1 (0: unpinned)
PIN = (
    "pin=; if [ {resources.jobs_per_gpu:q} -gt 0 ]; then pin='python3 -m ncaflow.runtime.gpuslots "
    "--per-device {resources.jobs_per_gpu:q} --locks .snakemake/gpu-slots "
    "--cache .snakemake/compile-cache --'; fi; "
)

if config["fold_jobs"] == "separate":

    rule train:
        input:
            unpack(train_inputs),
        output:
            **{key: f"{MODEL_DIR}/{name}" for key, name in TRAIN_FILES.items()},
        log:
            "results/logs/train/{task}/{cell}/fold{fold}.log",
        benchmark:
            "results/benchmarks/train/{task}/{cell}/fold{fold}.tsv"
        priority: train_resource("runtime")
        conda:
            "../envs/ncaflow.yaml"
        threads: train_resource("threads")
        resources:
            mem_mb=train_resource("mem_mb"),
            runtime=train_resource("runtime"),
            gpu=train_resource("gpu"),
            # N >= 1: the job claims one of N slots per visible GPU and runs pinned to it, with
            # compile caches shared in .snakemake/compile-cache (ncaflow.runtime.gpuslots); set by
            # workflow/profiles/gpu and slurm-packed. A resource, not a param: switching profiles
            # re-runs nothing.
            jobs_per_gpu=0,
        params:
            args=train_args,
            dir=model_dir,
        shell:
            PIN
            + "$pin ncaflow train --config {input.run:q} --out {params.dir:q} {params.args} "
            "--restart-changed > {log:q} 2>&1"

else:
    for _task, _folds, _cells in together_groups():

        rule:
            name:
                f"train_{_task}_{_folds}folds"
            input:
                unpack(train_inputs),
            output:
                **{
                    key: [
                        f"{MODEL_DIR}/{name}".replace("{fold}", str(k))
                        for k in range(_folds)
                    ]
                    for key, name in TRAIN_FILES.items()
                },
            log:
                "results/logs/train/{task}/{cell}/folds.log",
            benchmark:
                "results/benchmarks/train/{task}/{cell}/folds.tsv"
            wildcard_constraints:
                task=re.escape(_task),
                cell="|".join(re.escape(c) for c in _cells),
            priority: together_resource("runtime", _folds)
            conda:
                "../envs/ncaflow.yaml"
            threads: together_resource("threads", _folds)
            resources:
                mem_mb=together_resource("mem_mb", _folds),
                runtime=together_resource("runtime", _folds),
                gpu=together_resource("gpu", _folds),
                jobs_per_gpu=together_resource("jobs_per_gpu", _folds),
            params:
                args=together_args(_folds),
            shell:
                PIN + "$pin ncaflow train --config {input.run:q} {params.args} "
                "--restart-changed > {log:q} 2>&1"
