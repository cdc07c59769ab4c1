"""PyTorch reference of the task readouts the C header implements, and the seed states."""

from __future__ import annotations

import torch
from torch import Tensor

from ncaflow.export.readouts import emitter
from ncaflow.export.spec import ModelSpec

__all__ = ["predict", "seed_state"]


def seed_state(
    spec: ModelSpec, images: Tensor | None = None, *, size: tuple[int, int] | None = None
) -> Tensor:
    """The state ``<name>_seed`` builds.

    growing: (B=1 unless images gives B) centre cell with channels 3: = 1, size (H, W) required;
    other tasks: images (B, C_in, H, W) in the input channels, zeros elsewhere -> (B, C, H, W).
    """
    c = spec.config.channels
    if not emitter(spec.readout).needs_image:
        if size is None:
            raise ValueError("seed_state: growing needs size=(H, W)")
        h, w = size
        n = 1 if images is None else int(images.shape[0])
        x = torch.zeros(n, c, h, w)
        x[:, 3:, h // 2, w // 2] = 1.0
        return x
    if images is None:
        raise ValueError(f"seed_state: task {spec.task!r} needs images (B, C_in, H, W)")
    b, c_in, h, w = images.shape
    x = images.new_zeros(b, c, h, w)
    x[:, :c_in] = images
    return x


def predict(spec: ModelSpec, state: Tensor) -> Tensor:
    """Final states (B, C, H, W) -> predictions.

    vote/head: (B,) class index; mask: (B, H, W) bool (logit > 0);
    rgba: (B, 4, H, W) state channels 0..3.
    """
    return emitter(spec.readout).predict(spec, state)
