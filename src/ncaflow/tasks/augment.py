"""Random changes to training states that more than one task (and figure) uses: image
augmentation (flips, transposes, shifts) and the circular cut of regeneration training."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ncaflow.tasks.transfer import upload

__all__ = ["augment", "circle_damage", "shifted"]


def augment(
    x: Tensor, generator: torch.Generator, mode: str | bool = "dihedral", shift: int = 0
) -> Tensor:
    """Randomly transform every (C, H, W) image of x on its own (see ClassificationData.augment).

    mode: "hflip", "dihedral" (True means "dihedral"; "dihedral" needs square images);
    shift: translate by up to this many pixels in each direction, repeating the edge.
    """
    b = x.shape[0]

    def coin() -> Tensor:
        return upload(torch.rand(b, generator=generator) < 0.5, x.device).view(b, 1, 1, 1)

    if mode:
        x = torch.where(coin(), x.flip(3), x)
    if mode is True or mode == "dihedral":
        x = torch.where(coin(), x.flip(2), x)
        x = torch.where(coin(), x.transpose(2, 3), x)
    if shift:
        x = shifted(x, torch.randint(0, 2 * shift + 1, (b, 2), generator=generator), shift)
    return x


def shifted(x: Tensor, offsets: Tensor, shift: int) -> Tensor:
    """(B, C, H, W) images moved by ``shift - offsets`` pixels (offsets: (B, 2) rows, columns
    in 0..2 * shift, on the CPU), the edge repeated: one gather for the whole batch."""
    b, _, h, w = x.shape
    padded = F.pad(x, (shift, shift, shift, shift), mode="replicate").permute(0, 2, 3, 1)
    at = upload(offsets, x.device)
    rows = (at[:, 0:1] + torch.arange(h, device=x.device)).view(b, h, 1)
    cols = (at[:, 1:2] + torch.arange(w, device=x.device)).view(b, 1, w)
    batch = torch.arange(b, device=x.device).view(b, 1, 1)
    return padded[batch, rows, cols].permute(0, 3, 1, 2).contiguous()  # (B, C, H, W)


def circle_damage(n: int, h: int, w: int, generator: torch.Generator) -> Tensor:
    """(n, 1, h, w) float mask, 0 inside a random circle (radius 0.1-0.4 of the image), else 1."""
    ys = torch.linspace(-1.0, 1.0, h).view(1, h, 1)
    xs = torch.linspace(-1.0, 1.0, w).view(1, 1, w)
    centre = torch.rand(n, 2, 1, 1, generator=generator) - 0.5
    radius = torch.rand(n, 1, 1, generator=generator) * 0.3 + 0.1
    inside = (xs - centre[:, 0]) ** 2 + (ys - centre[:, 1]) ** 2 < radius**2
    return (~inside).float().unsqueeze(1)
