# Training: one job per task x grid cell x fold.
#
# Outputs are the files `ncaflow train` writes last (model.* atomically, after
# last.* and history.csv), never the folder: a killed job leaves checkpoint.safetensors
# behind, which is not an output, so Snakemake keeps it and the re-started job
# resumes from it -- unless the job's config changed since (`--restart-changed`).


rule train:
    input:
        unpack(train_inputs),
    output:
        model="results/models/{task}/{cell}/fold{fold}/model.safetensors",
        meta="results/models/{task}/{cell}/fold{fold}/model.json",
        last="results/models/{task}/{cell}/fold{fold}/last.safetensors",
        last_meta="results/models/{task}/{cell}/fold{fold}/last.json",
        history="results/models/{task}/{cell}/fold{fold}/history.csv",
    log:
        "results/logs/train/{task}/{cell}/fold{fold}.log",
    benchmark:
        "results/benchmarks/train/{task}/{cell}/fold{fold}.tsv"
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
        "pin=; if [ {resources.jobs_per_gpu:q} -gt 0 ]; then pin='python3 -m ncaflow.runtime.gpuslots "
        "--per-device {resources.jobs_per_gpu:q} --locks .snakemake/gpu-slots "
        "--cache .snakemake/compile-cache --'; fi; "
        "$pin ncaflow train --config {input.run:q} --out {params.dir:q} {params.args} "
        "--restart-changed > {log:q} 2>&1"
