"""data.seed_noise: Gaussian noise on the hidden channels of classification seeds, drawn
from the run's generator (deterministic), nothing drawn when it is 0."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers import run_config, write_medmnist

from ncaflow.config import ConfigError
from ncaflow.tasks import get_task
from ncaflow.tasks.classification import Classification
from ncaflow.tasks.runconfig import build_config

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _task(tmp_path: Path, noise: float) -> Classification:
    mirror = tmp_path / "mirror"
    write_medmnist(mirror / "medmnist" / "breastmnist.npz", size=28, n=(16, 4, 4))
    raw = {
        "task": "classification",
        "model": {"input_channels": 1, "output_channels": 2, "hidden_channels": 6},
        "data": {"flag": "breastmnist", "readout": "vote", "seed_noise": noise},
    }
    task = get_task("classification")(config=run_config(raw, tmp_path, mirror, batch_size=64))
    task.setup()
    return task  # type: ignore[return-value]


def test_seed_noise_on_hidden_channels_only_and_deterministic(tmp_path: Path) -> None:
    task = _task(tmp_path, 0.5)
    a = task.sample(torch.Generator().manual_seed(7)).state
    b = task.sample(torch.Generator().manual_seed(7)).state
    c = task.sample(torch.Generator().manual_seed(8)).state
    assert torch.equal(a, b) and not torch.equal(a[:, 3:], c[:, 3:])
    assert (a[:, 1:3] == 0).all() and a[:, :1].max() > 0  # outputs zero, the image kept
    hidden = a[:, 3:]
    assert abs(float(hidden.std()) - 0.5) < 0.02 and abs(float(hidden.mean())) < 0.02


def test_no_seed_noise_draws_nothing(tmp_path: Path) -> None:
    task = _task(tmp_path, 0.0)
    gen = torch.Generator().manual_seed(7)
    state = task.sample(gen).state
    assert (state[:, 1:] == 0).all()
    seed = torch.zeros(2, 9, 4, 4)
    before = gen.get_state()
    assert task.seed_noise(seed, 0.0, gen) is seed and torch.equal(gen.get_state(), before)


def test_seed_noise_is_checked() -> None:
    raw = {"task": "classification", "data": {"flag": "breastmnist", "seed_noise": -1.0}}
    with pytest.raises(ConfigError, match=r"key 'data\.seed_noise': -1\.0 is not allowed"):
        build_config(raw)


def test_evaluation_rollouts_start_from_noisy_seeds(tmp_path: Path) -> None:
    import dataclasses

    from ncaflow.model.cascade import build_model

    noisy, plain = _task(tmp_path / "a", 0.5), _task(tmp_path / "b", 0.0)
    every_cell = dataclasses.replace(noisy.config.model, fire_rate=1.0)  # no mask draws
    torch.manual_seed(0)
    model = build_model(dataclasses.replace(noisy.config, model=every_cell)).eval()
    torch.nn.init.normal_(model.fc2.weight, std=0.2)
    x = noisy.splits["test"][0]

    def scores(task: Classification, seed: int) -> torch.Tensor:
        return task.predict_scores(model, x, torch.Generator().manual_seed(seed))

    assert torch.equal(scores(plain, 3), scores(plain, 4))  # nothing random without noise
    assert torch.equal(scores(noisy, 3), scores(noisy, 3))  # the run's generator decides
    assert not torch.equal(scores(noisy, 3), scores(noisy, 4))
    assert not torch.equal(scores(noisy, 3), scores(plain, 3))
