"""The backend registry: one object per implementation, chosen once by name."""

from __future__ import annotations

import pytest
import torch

from ncaflow.backends import IMPLS
from ncaflow.backends.registry import BACKENDS, get_backend
from ncaflow.config import ConfigError, ModelConfig
from ncaflow.model.nca import NCA


def test_every_name_the_cli_offers_is_one_backend() -> None:
    assert tuple(BACKENDS) == IMPLS
    assert all(BACKENDS[name].name == name for name in IMPLS)
    with pytest.raises(ConfigError, match="unknown implementation"):
        get_backend("nosuch")


def test_a_model_keeps_the_backend_it_was_built_with() -> None:
    cfg = ModelConfig(output_channels=4, hidden_channels=4, hidden_width=8)
    for name in IMPLS:
        model = NCA(config=cfg, impl=name)
        assert model.backend is BACKENDS[name] and model.impl == name


def test_auto_takes_the_fast_path_on_cpu_and_the_reference_for_other_states() -> None:
    auto, x = BACKENDS["auto"], torch.zeros(1, 8, 4, 4)
    assert auto.pick(x) is BACKENDS["fast"]
    assert auto.pick(x[0]) is BACKENDS["reference"]  # not (B, C, H, W)
    assert BACKENDS["fast"].pick(x.long()) is BACKENDS["reference"]  # not floating point
    assert auto.on(torch.device("cpu"), (48, 128, 16)) is auto
