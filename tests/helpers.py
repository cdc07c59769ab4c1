"""Small configs shared by the tests."""

from __future__ import annotations

from typing import Any

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
