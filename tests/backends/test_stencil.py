"""The stencil every step shares: edge padding equals F.pad."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ncaflow.backends import stencil


@pytest.mark.parametrize("padding", ["zeros", "circular", "reflect", "replicate"])
@pytest.mark.parametrize("radius", [1, 2])
def test_pad_edges_is_f_pad(padding: str, radius: int) -> None:
    """The compiled step's padding (slices and concatenations) is F.pad's, for 3x3 and 5x5
    filters, channels-first and channels-last."""
    x = torch.rand(2, 3, 6, 7)
    mode = "constant" if padding == "zeros" else padding
    expected = F.pad(x, (radius,) * 4, mode=mode)
    assert torch.equal(stencil.pad_edges(x, padding, radius), expected)
    # the slices the compiler sees, and the channels-last (B, H, W, C) state the compiled
    # step reads (slices, eager too)
    if padding != "zeros":  # zeros is F.pad everywhere
        assert torch.equal(stencil.pad_by_slices(x, padding, radius, (2, 3)), expected)
    cl = stencil.pad_edges(x.permute(0, 2, 3, 1), padding, radius, dims=(1, 2))
    assert torch.equal(cl.permute(0, 3, 1, 2), expected)
