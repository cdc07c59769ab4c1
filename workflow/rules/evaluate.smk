# Evaluation: metrics of each trained model on its fold's validation part and
# on the task's test split (never used for selection).


rule evaluate:
    input:
        model="results/models/{task}/{cell}/fold{fold}/model.safetensors",
        meta="results/models/{task}/{cell}/fold{fold}/model.json",
        data=task_data,
    output:
        "results/models/{task}/{cell}/fold{fold}/metrics.json",
    log:
        "results/logs/evaluate/{task}/{cell}/fold{fold}.log",
    benchmark:
        "results/benchmarks/evaluate/{task}/{cell}/fold{fold}.tsv"
    conda:
        "../envs/ncaflow.yaml"
    threads: evaluate_resource("threads")
    resources:
        mem_mb=evaluate_resource("mem_mb"),
        runtime=evaluate_resource("runtime"),
    shell:
        "ncaflow evaluate --model {input.model:q} --split val --split test "
        "--out {output:q} > {log:q} 2>&1"
