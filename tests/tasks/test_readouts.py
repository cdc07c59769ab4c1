"""The classification readouts: one object per data.readout value, each reading its own
channels; the registry is the only place their names are matched."""

from __future__ import annotations

import typing

import pytest
import torch
from torch import nn

from ncaflow.config import ConfigError, ModelConfig, check
from ncaflow.tasks.classification import ClassificationData
from ncaflow.tasks.readouts import READOUTS, HeadReadout, VoteReadout, readout_class


def test_registry_holds_exactly_the_config_values() -> None:
    values = typing.get_args(typing.get_type_hints(ClassificationData)["readout"])
    assert set(READOUTS) == set(values)
    assert readout_class("head") is HeadReadout and readout_class("vote") is VoteReadout
    assert readout_class(["head"]) is VoteReadout  # the config check names the bad value


def test_vote_reads_output_channels_and_counts_votes() -> None:
    r = VoteReadout(model=ModelConfig(input_channels=1, output_channels=2, hidden_channels=3))
    out = torch.zeros(1, 6, 2, 2)
    out[0, 2, 0, :] = 1.0  # the top row votes for class 1, the bottom row for class 0
    out[0, 1, 1, :] = 1.0
    logits = r.logits(nn.Identity(), out, 2)
    assert logits.shape == (1, 2, 2, 2)
    assert r.scores(logits, 2, multilabel=False).tolist() == [[0.5, 0.5]]
    assert r.pixel_map(out, 2, multilabel=False).shape == (1, 2, 2, 2)
    assert r.configured_classes() == 2 and r.classes_key == "model.output_channels"


def test_head_reads_mean_hidden_state_through_the_model_head() -> None:
    cfg = ModelConfig(input_channels=1, output_channels=0, hidden_channels=3, head=2)
    r = HeadReadout(model=cfg)
    net = nn.Module()
    net.head = nn.Linear(3, 2)
    out = torch.randn(4, 4, 5, 5)
    want = net.head(out[:, 1:].mean(dim=(2, 3)))
    assert torch.equal(r.logits(net, out, 2), want)
    assert torch.allclose(r.scores(want, 2, multilabel=False).sum(1), torch.ones(4))
    assert r.pixel_map(out, 2, multilabel=False).shape == (4, 1, 5, 5)
    assert r.configured_classes() == 2 and r.classes_key == "model.head"


def test_head_refuses_a_model_without_hidden_channels() -> None:
    cfg = ModelConfig(input_channels=1, output_channels=2, hidden_channels=0, head=2)
    with pytest.raises(ConfigError, match=r"model\.hidden_channels"):
        HeadReadout(model=cfg).check_model(check)
    VoteReadout(model=cfg).check_model(check)  # votes need no hidden channels
