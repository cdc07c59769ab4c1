"""Uncertainty from stochastic rollouts is deterministic for a seed."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ncaflow.config import RunConfig, from_dict
from ncaflow.model.cascade import build_model
from ncaflow.model.uncertainty import stochastic_rollouts

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def test_uncertainty_is_deterministic_for_a_seed(tmp_path: Path) -> None:
    raw = {
        "task": "segmentation",
        "model": {"input_channels": 3, "output_channels": 1, "hidden_channels": 4},
    }
    cfg = from_dict(RunConfig, raw)
    torch.manual_seed(0)
    model = build_model(cfg)
    torch.nn.init.normal_(model.fc2.weight, std=0.1)
    x = torch.rand(2, cfg.model.channels, 12, 12)

    def run(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        return stochastic_rollouts(
            model,
            x,
            6,
            n=4,
            generator=torch.Generator().manual_seed(seed),
            readout=lambda s: torch.sigmoid(s[:, 3:4]),
        )

    (m1, v1), (m2, v2), (_, v3) = run(1), run(1), run(2)
    assert torch.equal(m1, m2) and torch.equal(v1, v2) and not torch.equal(v1, v3)
    assert m1.shape == v1.shape == (2, 1, 12, 12) and (v1 >= 0).all() and v1.sum() > 0
