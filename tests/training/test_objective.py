"""train.hidden_penalty: the loss grows by exactly weight * mean squared hidden state."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from ncaflow.config import ConfigError, RunConfig, from_dict
from ncaflow.tasks import get_task
from ncaflow.tasks.base import Batch
from ncaflow.training.objective import objective


def _config(weight: float, hidden: int = 3) -> RunConfig:
    raw = {
        "task": "classification",
        "model": {"input_channels": 1, "output_channels": 2, "hidden_channels": hidden},
        "data": {"flag": "breastmnist", "readout": "vote"},
        "train": {"hidden_penalty": weight},
    }
    cfg = from_dict(RunConfig, raw)
    cfg.validate()
    return cfg


def test_hidden_penalty_adds_weight_times_mean_square_of_hidden_channels() -> None:
    cfg = _config(0.0)
    task = get_task("classification")(config=cfg)
    task.describe()
    final = torch.randn(2, 6, 5, 5, dtype=torch.float64)
    batch = Batch(state=final, target=torch.tensor([0, 1]))
    model = torch.nn.Identity()
    base = objective(task, model, final, batch, cfg)
    torch.testing.assert_close(base, task.loss(model, final, batch))  # 0: nothing added
    weighted = objective(
        task, model, final, batch, dataclasses.replace(cfg, train=_config(0.25).train)
    )
    hand = torch.tensor(
        [float((final[i, 3:] ** 2).sum() / (3 * 25)) for i in range(2)], dtype=torch.float64
    )
    torch.testing.assert_close(weighted - base, 0.25 * hand)


def test_hidden_penalty_is_checked() -> None:
    with pytest.raises(ConfigError, match=r"train.hidden_penalty.*>= 0|in \["):
        _config(-0.1)
    with pytest.raises(ConfigError, match="hidden_penalty': the model has no hidden"):
        _config(0.1, hidden=0)
