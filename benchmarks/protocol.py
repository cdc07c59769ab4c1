"""What every benchmark worker shares: arguments, seed states, timing, memory, the result line.

Standard library and numpy only, so that the peers' scripts (run in their own
virtualenvs, without ncaflow) can import it too. A worker measures one case:

    python <worker> --mode train|infer --state seed|grown|full --batch 8 ...

and prints one line ``RESULT {json}`` with the per-iteration times (after the
warm-up iterations) and the process's resident memory before the first
iteration and at its peak.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time
from collections.abc import Callable
from typing import Any

import numpy as np

# The growing config of issue 8 (Distill "Growing NCA"): RGBA + 12 hidden channels.
CHANNELS = 16
ALPHA = 3  # the alive channel (CAX keeps it last: its workers move it there)
HIDDEN = 128
FIRE_RATE = 0.5
ALIVE_THRESHOLD = 0.1
STATES = ("seed", "grown", "full")  # the start states of seed_state


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--mode", choices=["train", "infer"], default="train")
    p.add_argument("--state", choices=STATES, default="grown")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--size", type=int, default=72)
    p.add_argument("--steps", type=int, default=64)
    p.add_argument("--iters", type=int, default=2, help="timed iterations")
    p.add_argument("--warmup", type=int, default=1, help="untimed iterations first")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--impl", default="ncaflow", help="ncaflow workers: which implementation")
    return p.parse_args(argv)


def seed_state(kind: str, batch: int, size: int, seed: int = 0) -> np.ndarray:
    """(B, C, H, W) float32 start state.

    seed: one live cell in the centre (where growing training starts);
    grown: a live disk of diameter 0.6 * size with random channels (a grown
    40-pixel emoji in the Distill 72x72 canvas); full: every cell alive (the
    worst case for anything that skips dead or non-firing cells).
    """
    x = np.zeros((batch, CHANNELS, size, size), np.float32)
    c = size // 2
    if kind == "seed":
        x[:, ALPHA:, c, c] = 1.0
        return x
    rng = np.random.default_rng(seed)
    values = rng.random((batch, CHANNELS, size, size), dtype=np.float32)
    if kind == "full":
        inside = np.ones((size, size), bool)
    else:
        yy, xx = np.mgrid[:size, :size]
        inside = (yy - c) ** 2 + (xx - c) ** 2 <= (0.3 * size) ** 2
    x[:, :, inside] = values[:, :, inside]
    x[:, ALPHA, inside] = 1.0
    return x


def target(batch: int, size: int) -> np.ndarray:
    """(B, 4, H, W) fixed RGBA target for the training loss."""
    return np.random.default_rng(1).random((batch, 4, size, size), dtype=np.float32)


def rss_mb() -> float:
    """Current resident set size of this process in MiB."""
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(
    args: argparse.Namespace,
    iteration: Callable[[], None],
    sync: Callable[[], None] = lambda: None,
    extra: Callable[[], dict[str, Any]] = dict,
) -> None:
    """Run warm-up and timed iterations, then print the RESULT line."""
    base = rss_mb()
    for _ in range(args.warmup):
        iteration()
    sync()
    times = []
    for _ in range(args.iters):
        t0 = time.perf_counter()
        iteration()
        sync()
        times.append(time.perf_counter() - t0)
    result = {"times": times, "rss_base_mb": base, "rss_peak_mb": peak_rss_mb(), **extra()}
    print("RESULT " + json.dumps(result), flush=True)


def fail(reason: str) -> None:
    """Report that this case cannot be measured (the runner shows the reason)."""
    print("RESULT " + json.dumps({"error": reason}), flush=True)
