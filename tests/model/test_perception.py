"""Perception: the fixed filter banks, edge padding and registered banks."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ncaflow.config import ModelConfig
from ncaflow.model import perception
from ncaflow.model.nca import NCA
from ncaflow.model.perception import check_perception, fixed_filters, perceive


def test_fixed_filters_are_identity_and_sobel() -> None:
    bank = fixed_filters(laplace=True)
    assert bank.shape == (4, 3, 3)
    x = torch.arange(25.0).view(1, 1, 5, 5)  # value = 5*row + col: d/dx = 1, d/dy = 5
    p = perceive(x, bank.unsqueeze(1), "replicate")
    assert torch.equal(p[0, 0], x[0, 0])
    assert torch.allclose(p[0, 1, 1:-1, 1:-1], torch.full((3, 3), 1.0))
    assert torch.allclose(p[0, 2, 1:-1, 1:-1], torch.full((3, 3), 5.0))
    assert torch.allclose(p[0, 3, 1:-1, 1:-1], torch.zeros(3, 3))  # linear ramp: no curvature


@pytest.mark.parametrize("padding", ["zeros", "circular", "reflect", "replicate"])
@pytest.mark.parametrize("radius", [1, 2])
def test_pad_edges_is_f_pad(padding: str, radius: int) -> None:
    """The compiled step's padding (slices and concatenations) is F.pad's, for 3x3 and 5x5
    filters, channels-first and channels-last."""
    x = torch.rand(2, 3, 6, 7)
    mode = "constant" if padding == "zeros" else padding
    expected = F.pad(x, (radius,) * 4, mode=mode)
    assert torch.equal(perception.pad_edges(x, padding, radius), expected)
    # the slices the compiler sees, and the channels-last (B, H, W, C) state the compiled
    # step reads (slices, eager too)
    if padding != "zeros":  # zeros is F.pad everywhere
        assert torch.equal(perception.pad_by_slices(x, padding, radius, (2, 3)), expected)
    cl = perception.pad_edges(x.permute(0, 2, 3, 1), padding, radius, dims=(1, 2))
    assert torch.equal(cl.permute(0, 3, 1, 2), expected)


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
