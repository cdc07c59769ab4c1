"""train.focal_gamma: the focal loss against a hand computation, and its wiring."""

from __future__ import annotations

import math

import pytest
import torch

from ncaflow.config import ConfigError, RunConfig, from_dict
from ncaflow.tasks import get_task
from ncaflow.tasks.base import Batch
from ncaflow.tasks.losses import classification_loss


def test_focal_loss_matches_a_hand_computation_and_spares_easy_examples() -> None:
    # two classes; sample 0 is easy (p_true = 0.95), sample 1 hard (p_true = 0.2)
    p = torch.tensor([0.95, 0.2])
    logits = torch.stack([torch.log(p), torch.log(1 - p)], 1)  # softmax gives (p, 1 - p)
    target = torch.tensor([0, 0])
    gamma = 2.0
    focal = classification_loss(logits, target, multilabel=False, gamma=gamma)
    ce = classification_loss(logits, target, multilabel=False)
    hand = [(1 - q) ** gamma * -math.log(q) for q in (0.95, 0.2)]
    torch.testing.assert_close(focal, torch.tensor(hand), rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(ce, torch.tensor([-math.log(0.95), -math.log(0.2)]))
    ratio = focal / ce  # (1 - p_true)^gamma: 0.0025 for the easy, 0.64 for the hard one
    assert ratio[0] < 0.003 and ratio[1] > 0.6


def test_focal_multilabel_per_class() -> None:
    logits = torch.tensor([[2.0, -1.0]])
    target = torch.tensor([[1, 1]])
    got = classification_loss(logits, target, multilabel=True, gamma=1.0)
    s = torch.sigmoid(logits)  # the true class is 1 for both: p_true = sigmoid
    torch.testing.assert_close(got, (1 - s) * -torch.log(s))


def _config(gamma: float, task: str = "classification") -> RunConfig:
    raw = {
        "task": task,
        "model": {"input_channels": 1, "output_channels": 2, "hidden_channels": 2},
        "train": {"focal_gamma": gamma},
    }
    if task == "classification":
        raw["data"] = {"flag": "breastmnist", "readout": "vote"}
    cfg = from_dict(RunConfig, raw)
    cfg.validate()
    return cfg


def test_classification_trains_on_the_focal_loss_and_evaluates_cross_entropy() -> None:
    task = get_task("classification")(config=_config(2.0))
    task.describe()
    out = torch.randn(3, 5, 4, 4)
    target = torch.tensor([0, 1, 1])
    trained = task.loss(torch.nn.Identity(), out, Batch(state=out, target=target))
    logits = out[:, 1:3]
    per_pixel = classification_loss(
        logits, target.view(-1, 1, 1).expand(-1, 4, 4), multilabel=False, gamma=2.0
    )
    torch.testing.assert_close(trained, per_pixel.flatten(1).mean(1))
    ce = task.loss_from_logits(logits, target)  # what evaluate() reports
    assert (trained < ce).all()


def test_focal_gamma_is_checked() -> None:
    with pytest.raises(ConfigError, match=r"train.focal_gamma.*in \[0, 10\]"):
        _config(-1.0)
    with pytest.raises(ConfigError, match="focal_gamma': task 'segmentation' has no focal"):
        get_task("segmentation")(config=_config(1.0, "segmentation"))
