"""Perception: the fixed filter banks and registered banks."""

from __future__ import annotations

import pytest
import torch

from ncaflow.backends.stencil import perceive
from ncaflow.config import ModelConfig
from ncaflow.model import perception
from ncaflow.model.nca import NCA
from ncaflow.model.perception import check_perception, fixed_filters


def test_fixed_filters_are_identity_and_sobel() -> None:
    bank = fixed_filters(laplace=True)
    assert bank.shape == (4, 3, 3)
    x = torch.arange(25.0).view(1, 1, 5, 5)  # value = 5*row + col: d/dx = 1, d/dy = 5
    p = perceive(x, bank.unsqueeze(1), "replicate")
    assert torch.equal(p[0, 0], x[0, 0])
    assert torch.allclose(p[0, 1, 1:-1, 1:-1], torch.full((3, 3), 1.0))
    assert torch.allclose(p[0, 2, 1:-1, 1:-1], torch.full((3, 3), 5.0))
    assert torch.allclose(p[0, 3, 1:-1, 1:-1], torch.zeros(3, 3))  # linear ramp: no curvature


def test_a_registered_filter_bank_is_a_perception(monkeypatch: pytest.MonkeyPatch) -> None:
    """perception.register_bank: a config names the bank, the fast path and the reference
    agree on it, and an unknown name is refused with the registered ones listed."""
    from ncaflow.config import ConfigError

    bank = torch.stack([fixed_filters()[0], fixed_filters(laplace=True)[3]])  # identity, Laplace
    monkeypatch.setitem(perception.BANKS, "laplace_only", lambda: bank)
    cfg = ModelConfig(output_channels=4, hidden_channels=4, perception="laplace_only")
    cfg.validate()
    torch.manual_seed(0)
    ref, fast = NCA(config=cfg, impl="reference"), NCA(config=cfg, impl="fast")
    torch.nn.init.normal_(ref.fc2.weight, std=0.1)
    fast.load_state_dict(ref.state_dict())
    assert ref.kernels().shape == (8 * 2, 1, 3, 3)
    x = torch.rand(2, 8, 9, 9)
    g = [torch.Generator().manual_seed(1) for _ in range(2)]
    with torch.no_grad():
        torch.testing.assert_close(fast(x, 5, generator=g[1]), ref(x, 5, generator=g[0]))
    with pytest.raises(ConfigError, match="laplace_only"):
        check_perception("nosuch")
