"""Augmentation transforms every image of a batch on its own."""

from __future__ import annotations

import pytest
import torch

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def test_augment_modes_per_image() -> None:
    """hflip only mirrors left-right; dihedral reaches all 8 symmetries; each image draws its
    own transform; shifts translate with the edge repeated and keep the shape."""
    from ncaflow.tasks.augment import augment

    img = torch.arange(25.0).view(1, 1, 5, 5)
    batch = img.expand(64, -1, -1, -1)
    gen = torch.Generator().manual_seed(0)
    hflip = augment(batch, gen, "hflip")
    assert all(torch.equal(a, img[0]) or torch.equal(a, img[0].flip(2)) for a in hflip)
    assert 0 < sum(torch.equal(a, img[0]) for a in hflip) < 64  # per image, not per batch
    dihedral = augment(batch, gen, True)
    assert len({tuple(a.flatten().tolist()) for a in dihedral}) == 8
    shifted = augment(batch, gen, False, shift=1)
    assert shifted.shape == batch.shape
    for a in shifted:  # every result is the image moved by at most one pixel, edges repeated
        padded = torch.nn.functional.pad(img, (1, 1, 1, 1), mode="replicate")[0]
        assert any(
            torch.equal(a, padded[:, y : y + 5, x : x + 5]) for y in range(3) for x in range(3)
        )
    assert torch.equal(augment(batch, gen, False, 0), batch)


def test_shift_is_one_gather_equal_to_cutting_each_image() -> None:
    """``shifted`` moves each image by its own offsets in one gather: the same values as
    cutting each image out of the replicate-padded batch, channels and all."""
    from ncaflow.tasks.augment import shifted

    gen = torch.Generator().manual_seed(1)
    for (b, c, h, w), s in (((5, 3, 7, 9), 2), ((16, 1, 28, 28), 3), ((2, 4, 5, 5), 1)):
        x = torch.randn(b, c, h, w, generator=gen)
        offsets = torch.randint(0, 2 * s + 1, (b, 2), generator=gen)
        padded = torch.nn.functional.pad(x, (s, s, s, s), mode="replicate")
        cut = [padded[i, :, y : y + h, z : z + w] for i, (y, z) in enumerate(offsets.tolist())]
        out = shifted(x, offsets, s)
        assert out.is_contiguous() and torch.equal(out, torch.stack(cut))
