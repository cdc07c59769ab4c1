"""Random changes to training states that more than one task (and figure) uses: image
augmentation (flips, transposes, shifts) and the circular cut of regeneration training."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["augment", "circle_damage"]


def augment(
    x: Tensor, generator: torch.Generator, mode: str | bool = "dihedral", shift: int = 0
) -> Tensor:
    """Randomly transform every (C, H, W) image of x on its own (see ClassificationData.augment).

    mode: "hflip", "dihedral" (True means "dihedral"; "dihedral" needs square images);
    shift: translate by up to this many pixels in each direction, repeating the edge.
    """
    b = x.shape[0]

    def coin() -> Tensor:
        return (torch.rand(b, generator=generator) < 0.5).to(x.device).view(b, 1, 1, 1)

    if mode:
        x = torch.where(coin(), x.flip(3), x)
    if mode is True or mode == "dihedral":
        x = torch.where(coin(), x.flip(2), x)
        x = torch.where(coin(), x.transpose(2, 3), x)
    if shift:
        h, w = x.shape[2:]
        padded = F.pad(x, (shift, shift, shift, shift), mode="replicate")
        offsets = torch.randint(0, 2 * shift + 1, (b, 2), generator=generator).tolist()
        x = torch.stack([padded[i, :, y : y + h, z : z + w] for i, (y, z) in enumerate(offsets)])
    return x


def circle_damage(n: int, h: int, w: int, generator: torch.Generator) -> Tensor:
    """(n, 1, h, w) float mask, 0 inside a random circle (radius 0.1-0.4 of the image), else 1."""
    ys = torch.linspace(-1.0, 1.0, h).view(1, h, 1)
    xs = torch.linspace(-1.0, 1.0, w).view(1, 1, w)
    centre = torch.rand(n, 2, 1, 1, generator=generator) - 0.5
    radius = torch.rand(n, 1, 1, generator=generator) * 0.3 + 0.1
    inside = (xs - centre[:, 0]) ** 2 + (ys - centre[:, 1]) ** 2 < radius**2
    return (~inside).float().unsqueeze(1)
