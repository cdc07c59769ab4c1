# Data: fetch each task's files into data.root (mirror, cache or download, with
# checksums), then write the k folds of tasks that cross-validate over their data.


localrules:
    download,


rule download:
    input:
        run=run_config,
    output:
        manifest("{task}"),
    log:
        "results/logs/download/{task}.log",
    benchmark:
        "results/benchmarks/download/{task}.tsv"
    priority: data_priority()
    conda:
        "../envs/ncaflow.yaml"
    params:
        sets=data_sets,
    # on failure the log's last line (ncaflow's one-line error: where to put the file,
    # how to name a mirror) goes to the terminal too, not only into the log
    shell:
        "ncaflow download --config {input.run:q} --name {wildcards.task:q} "
        "{params.sets} --out {output:q} > {log:q} 2>&1 "
        "|| {{ tail -n 1 {log:q} >&2; exit 1; }}"


rule prepare:
    input:
        run=run_config,
        data=manifest("{task}"),
    output:
        "data/prepared/{task}/folds.json",
    log:
        "results/logs/prepare/{task}.log",
    benchmark:
        "results/benchmarks/prepare/{task}.tsv"
    priority: data_priority()
    conda:
        "../envs/ncaflow.yaml"
    threads: other_resource("threads")
    resources:
        mem_mb=other_resource("mem_mb"),
        runtime=other_resource("runtime"),
    params:
        sets=data_sets,
        k=fold_count,
        seed=config["fold_seed"],
    shell:
        "ncaflow prepare --config {input.run:q} {params.sets} --k {params.k:q} "
        "--seed {params.seed:q} --out {output:q} > {log:q} 2>&1"
