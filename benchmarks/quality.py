"""Training quality of the fast path against the reference formulation on the lizard.

    python benchmarks/quality.py [--iterations 200] [--out benchmarks/results/quality.json]

Trains the growing task twice from the same seed, once with ``impl="reference"``
and once with the default fast path, and prints both validation-loss curves. The
paths agree to float rounding per step, so the curves may drift apart only as
rounding differences grow through training (chaotic dynamics), not systematically.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from ncaflow.model.nca import Impl
from ncaflow.tasks.runconfig import load_config
from ncaflow.training.train import train

REPO = Path(__file__).resolve().parents[1]


def run(impl: Impl, iterations: int, out: Path) -> tuple[list[float], float]:
    config = load_config(REPO / "config/runs/growing.yaml", [
        f"train.iterations={iterations}", f"train.eval_every={iterations // 10}",
        "train.checkpoint_every=100000", "train.progress=false", "train.device=cpu",
        "data.size=24", "data.pad=6", "data.pool_size=256", "train.batch_size=4",
        "train.steps=[32, 48]", "train.scheduler.milestones=[100000]",
    ])  # fmt: skip
    start = time.perf_counter()
    result = train(config, out / impl, impl=impl)
    return [r["val_loss"] for r in result.history], time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--iterations", type=int, default=200)
    p.add_argument("--out", type=Path, default=REPO / "benchmarks/results/quality.json")
    args = p.parse_args()
    torch.set_num_threads(2)
    work = args.out.parent / "quality-runs"
    impls: tuple[Impl, ...] = ("reference", "auto")
    curves = {impl: run(impl, args.iterations, work) for impl in impls}
    report = {impl: {"val_loss": c, "seconds": s} for impl, (c, s) in curves.items()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    for impl, (curve, seconds) in curves.items():
        print(f"{impl:9s} {seconds:6.0f} s  val_loss: " + " ".join(f"{v:.4f}" for v in curve))


if __name__ == "__main__":
    main()
