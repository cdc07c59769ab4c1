"""Small configs shared by the tests."""

from __future__ import annotations

from typing import Any

from ncaflow.config import RunConfig, from_dict


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
