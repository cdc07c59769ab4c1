"""Small configs shared by the tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from ncaflow.config import RunConfig, from_dict
from ncaflow.model.nca import NCA


def digits_config(**train: Any) -> RunConfig:
    """Self-classification on scikit-learn's bundled 8x8 digits: offline and fast."""
    raw: dict[str, Any] = {
        "task": "selfclass",
        "model": {
            "input_channels": 1,
            "output_channels": 10,
            "hidden_channels": 5,
            "hidden_width": 32,
            "alive_channel": 0,
        },
        "data": {"dataset": "digits", "eval_batch": 512},
        "train": {
            "iterations": 6,
            "batch_size": 8,
            "steps": [4, 6],
            "eval_every": 2,
            "checkpoint_every": 2,
            "progress": False,
            "device": "cpu",
            **train,
        },
    }
    cfg = from_dict(RunConfig, raw)
    cfg.validate()
    return cfg


def assert_same_rollout(
    ref: NCA, other: NCA, x: torch.Tensor, steps: int, *, rtol: float, atol: float
) -> None:
    """Same final state (same fire masks from equally seeded generators), with and without
    gradients (the compiled step compiles each its own way), and same parameter gradients of
    the squared state; gradients get 10x the tolerances."""
    dev = x.device
    with torch.no_grad():
        infer = other(x, steps, generator=torch.Generator(dev).manual_seed(3))
    outs = [m(x, steps, generator=torch.Generator(dev).manual_seed(3)) for m in (ref, other)]
    torch.testing.assert_close(outs[1], outs[0], rtol=rtol, atol=atol)
    torch.testing.assert_close(infer, outs[0], rtol=rtol, atol=atol)
    grads = [
        torch.autograd.grad(o.square().sum(), list(m.parameters()))
        for o, m in zip(outs, (ref, other), strict=True)
    ]
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(b, a, rtol=10 * rtol, atol=10 * atol)


def run_config(raw: dict[str, Any], tmp: Path, mirror: Path, **train_kw: Any) -> RunConfig:
    """A run config from ``raw`` with its data under tmp and the mirror, trained on CPU."""
    raw = {
        **raw,
        "data": {"root": str(tmp / "cache"), "mirror": str(mirror), **raw.get("data", {})},
    }
    train_cfg = {"progress": False, "device": "cpu", "checkpoint_every": 1000, **train_kw}
    cfg = from_dict(RunConfig, {**raw, "train": train_cfg})
    cfg.validate()
    return cfg


def write_medmnist(
    path: Path, *, size: int = 16, labels: int = 1, n: tuple[int, int, int] = (96, 32, 32)
) -> None:
    """A learnable MedMNIST-format npz: label 0 means 'bright top half' (binary),
    labels 1.. (multi-label) are noise. Labels stored (N, L) as MedMNIST does."""
    rng = np.random.default_rng(0)
    arrays = {}
    for split, count in zip(("train", "val", "test"), n, strict=True):
        y = rng.integers(0, 2, (count, labels))
        x = rng.integers(0, 60, (count, size, size))
        x[y[:, 0] == 1, : size // 2] += 150
        arrays[f"{split}_images"] = x.astype(np.uint8)
        arrays[f"{split}_labels"] = y.astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)


def evaluate(paths: Any, *, overrides: tuple[str, ...] | list[str] = (), **kw: Any) -> Any:
    """``ncaflow.evaluate`` on the data a test trained on: a model file chooses no data
    folder (issue 26), so the caller names its cache and mirror, as a user would."""
    from ncaflow.guard.io import load_config_of
    from ncaflow.inference.evaluate import evaluate as _evaluate

    first = paths[0] if isinstance(paths, list) else paths
    data = load_config_of(first)[0].data
    where = [f"data.{k}={data[k]}" for k in ("root", "mirror") if data.get(k)]
    return _evaluate(paths, overrides=[*where, *overrides], **kw)
