"""Train one short run and print the SHA-256 of its weights or its CPU time per iteration,
under whatever kernels the environment forces (benchmarks/README.md, "Same bytes on any
x86-64 CPU"). Run from the repository root, one process per environment, e.g.::

    ATEN_CPU_CAPABILITY=avx512 python benchmarks/isa_runs.py bytes growing 30
    MKL_CBWR=COMPATIBLE ATEN_CPU_CAPABILITY=avx2 OMP_NUM_THREADS=1 \\
        python benchmarks/isa_runs.py speed selfclass 30

train.reproducible follows the environment (true when it holds the reproducible
variables), so that the library does not refuse the forced kernels.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import statistics
import sys
import tempfile
import time

import torch

from ncaflow.runtime.reproducible import missing
from ncaflow.tasks.runconfig import load_config
from ncaflow.training.train import train

RUNS = {  # config/config.yaml's cells at its sizes (selfclass: small validation split)
    "growing": (
        "config/runs/growing.yaml",
        [
            "data.size=24",
            "data.pad=6",
            "data.pool_size=256",
            "model.hidden_width=64",
            "train.batch_size=4",
            "train.steps=[32, 48]",
            "model.hidden_channels=8",
        ],
    ),
    "selfclass": (
        "config/runs/selfclass.yaml",
        ["data.val_size=64", "data.test_size=64", "train.batch_size=8"],
    ),
    "breastmnist": ("config/runs/breastmnist.yaml", ["model.hidden_width=32"]),
}


def main(what: str, task: str, iterations: int) -> None:
    path, sets = RUNS[task]
    sets = [
        *sets,
        *(f"train.{k}={iterations}" for k in ("iterations", "eval_every", "checkpoint_every")),
        "train.progress=false",
        f"train.reproducible={str(not missing()).lower()}",
    ]
    config = load_config(path, sets)
    stamps: list[float] = []
    with tempfile.TemporaryDirectory() as out:
        train(config, out, on_iteration=lambda n: stamps.append(time.process_time()))
        with open(f"{out}/model.safetensors", "rb") as f:
            digest = hashlib.sha256(f.read()).hexdigest()[:16]
    kernels = (
        f"ATen={torch.backends.cpu.get_cpu_capability()} MKL_CBWR={os.environ.get('MKL_CBWR', '-')}"
    )
    if what == "bytes":
        print(f"{task} {kernels} threads={torch.get_num_threads()} sha256={digest}")
    else:
        cpu = [b - a for a, b in itertools.pairwise(stamps)][:-1]  # last: eval
        print(f"{task} {kernels} cpu {statistics.median(cpu) * 1e3:.1f} ms/it")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
