"""model.adaptive_steps: per-sample early stopping of inference rollouts, by a hand-checked
rule on a model whose state halves every step; training runs every step."""

from __future__ import annotations

import pytest
import torch

from ncaflow.config import AdaptiveStepsConfig, ModelConfig
from ncaflow.model.nca import NCA


def halving_model(
    *,
    fire_rate: float = 1.0,
    rule: AdaptiveStepsConfig | None = None,
    inputs: int = 1,
    pull: bool = False,
    step_channel: int = 0,
) -> NCA:
    """Every fired cell halves its output and hidden channel: dx = -x / 2 (through the
    identity filter: relu(x) - relu(-x) = x); with ``pull``, halves their distance to the
    cell's image channel 0 (>= 0): dx = (image - x) / 2, so a zero seed moves too."""
    cfg = ModelConfig(
        input_channels=inputs,
        output_channels=1,
        hidden_channels=1,
        hidden_width=5,
        fire_rate=fire_rate,
        adaptive_steps=rule,
        step_channel=step_channel,
    )
    model = NCA(config=cfg, impl="reference")
    k = model.n_filters
    with torch.no_grad():
        model.fc1.weight.zero_()
        model.fc1.bias.zero_()
        model.fc2.weight.zero_()
        for u in range(2):  # updatable channel u is state channel inputs + u
            model.fc1.weight[2 * u, (inputs + u) * k] = 1.0  # relu(x)
            model.fc1.weight[2 * u + 1, (inputs + u) * k] = -1.0  # relu(-x)
            model.fc2.weight[u, 2 * u] = -0.5
            model.fc2.weight[u, 2 * u + 1] = 0.5
            model.fc2.weight[u, 4] = 0.5 if pull else 0.0
        model.fc1.weight[4, 0] = 1.0  # relu(image channel 0)
        if step_channel:  # a small drift with the step: t / T enters every hidden unit
            model.step_w.fill_(0.01)
    return model


def seeds(amplitudes: list[float], size: int = 5) -> torch.Tensor:
    """(B, 3, H, W): image 0.3, output and hidden channels a_b at every cell (one cell -a_b)."""
    x = torch.zeros(len(amplitudes), 3, size, size)
    x[:, 0] = 0.3
    for b, a in enumerate(amplitudes):
        x[b, 1:] = a
        x[b, 2, 0, 0] = -a
    return x


def test_each_sample_stops_by_the_rule_and_is_frozen() -> None:
    rule = AdaptiveStepsConfig(tol=0.01, patience=3, min_steps=2)
    model = halving_model(rule=rule)
    x = seeds([1.0, 4.0, 0.001])
    with torch.no_grad():
        out = model(x, 20)
    # the change at step t is a * 0.5^t: below 0.01 from t = 7 (a = 1) and t = 9 (a = 4);
    # quiet from the first step for a = 0.001, but at least min_steps; then 3 quiet steps
    assert model.steps_taken is not None
    assert model.steps_taken.tolist() == [9, 11, 3]
    for b, (a, n) in enumerate(zip([1.0, 4.0, 0.001], [9, 11, 3], strict=True)):
        torch.testing.assert_close(out[b, 1, 2, 2], torch.tensor(a * 0.5**n))  # frozen after n
    torch.testing.assert_close(out[:, 0], x[:, 0])  # the image untouched


def test_the_longest_rollout_bounds_it_and_training_runs_every_step() -> None:
    model = halving_model(rule=AdaptiveStepsConfig(tol=0.01, patience=3, min_steps=2))
    x = seeds([4.0])
    with torch.no_grad():
        model(x, 6)
    assert model.steps_taken is not None and model.steps_taken.tolist() == [6]
    out = model(x.requires_grad_(), 20)  # gradients on: training, no early stop
    assert model.steps_taken is None
    torch.testing.assert_close(out[0, 1, 2, 2], torch.tensor(4.0 * 0.5**20))


def test_without_adaptive_steps_nothing_changes() -> None:
    model, plain = halving_model(rule=AdaptiveStepsConfig()), halving_model()
    x = seeds([1.0, 2.0])
    with torch.no_grad():
        assert torch.equal(plain(x, 30), halving_model()(x, 30))
    assert plain.steps_taken is None and model.steps_taken is None


@pytest.mark.parametrize("key", ["tol", "patience", "min_steps"])
def test_adaptive_steps_keys_are_checked(key: str) -> None:
    from ncaflow.config import ConfigError
    from ncaflow.tasks.runconfig import build_config

    raw = {"task": "growing", "model": {"adaptive_steps": {key: 0}}}
    with pytest.raises(ConfigError, match=rf"key 'model\.adaptive_steps\.{key}': 0"):
        build_config(raw)
