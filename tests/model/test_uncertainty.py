"""Uncertainty from stochastic rollouts is deterministic for a seed."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ncaflow.config import RunConfig, from_dict
from ncaflow.model.cascade import build_model
from ncaflow.model.uncertainty import step_window, stochastic_rollouts

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


def _drifting_model(rate: float) -> torch.nn.Module:
    """Every step adds ``rate`` to the output channel (fire rate 1, no hidden dynamics)."""
    raw = {
        "task": "segmentation",
        "model": {
            "input_channels": 3,
            "output_channels": 1,
            "hidden_channels": 2,
            "hidden_width": 4,
            "fire_rate": 1.0,
        },
    }
    model = build_model(from_dict(RunConfig, raw), impl="reference")
    with torch.no_grad():
        model.fc1.weight.zero_()
        model.fc1.bias.fill_(1.0)  # relu(W1 p + b1) = 1 for every hidden unit
        model.fc2.weight.zero_()
        model.fc2.weight[0] = rate / 4  # the output channel grows by rate a step
    return model


def test_step_window_variance_of_a_constant_drift() -> None:
    steps, window, rate = 10, 4, 0.5
    x = torch.zeros(2, 6, 5, 5)
    gen = torch.Generator().manual_seed(0)
    mean, var = step_window(
        _drifting_model(rate), x, steps, window=window, generator=gen, readout=lambda s: s[:, 3:4]
    )
    # the readout over the last 4 steps is rate * (7, 8, 9, 10): mean 8.5 * rate and
    # unbiased variance rate^2 * W (W + 1) / 12
    torch.testing.assert_close(mean, torch.full((2, 1, 5, 5), 8.5 * rate))
    torch.testing.assert_close(var, torch.full((2, 1, 5, 5), rate**2 * window * (window + 1) / 12))
    _, still = step_window(
        _drifting_model(0.0), x, steps, window=window, generator=gen, readout=lambda s: s[:, 3:4]
    )
    assert (still == 0).all()
    with pytest.raises(ValueError, match="window"):
        step_window(_drifting_model(rate), x, 3, window=4, generator=gen, readout=lambda s: s)


def test_uncertainty_window_is_checked_against_the_rollout() -> None:
    from ncaflow.config import ConfigError
    from ncaflow.tasks.runconfig import build_config

    raw = {
        "task": "segmentation",
        "model": {"input_channels": 3, "output_channels": 1},
        "train": {"steps": [8, 12]},
        "data": {"uncertainty_window": 13},
    }
    with pytest.raises(ConfigError, match=r"data\.uncertainty_window': give 0 \(off\) or 2\.\.12"):
        build_config(raw)
    raw["data"] = {"uncertainty_window": 12}
    assert build_config(raw).data["uncertainty_window"] == 12
