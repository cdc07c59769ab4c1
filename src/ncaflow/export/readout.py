"""PyTorch reference of the task readouts the C header implements, and the seed states."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

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
    if spec.readout == "rgba":
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
    n_in, n_out = spec.config.input_channels, spec.config.output_channels
    if spec.readout == "rgba":
        return state[:, :4]
    if spec.readout == "mask":
        return state[:, n_in] > 0
    if spec.readout == "head":
        assert spec.head_w is not None and spec.head_b is not None
        mean = state[:, n_in + n_out :].mean(dim=(2, 3))  # (B, hidden)
        logits = mean @ torch.from_numpy(spec.head_w).T + torch.from_numpy(spec.head_b)
        return logits.argmax(1)
    logits = state[:, n_in : n_in + n_out]  # (B, K, H, W)
    onehot = F.one_hot(logits.argmax(1), n_out).permute(0, 3, 1, 2).float()  # (B, K, H, W)
    if spec.threshold is not None:
        onehot = onehot * (state[:, :1] > spec.threshold).float()
    return onehot.sum(dim=(2, 3)).argmax(1)
