"""The canonical eager PyTorch NCA, as the Distill article and NCALab write it.

This is the yardstick of the benchmark, so it is the honest idiomatic version,
not a slowed-down one: one depthwise convolution for identity + Sobel x + Sobel y
(NCALab concatenates identity and the filtered channels the same way), a 1x1
convolution 48 -> 128, ReLU, a 1x1 convolution 128 -> 16 without bias (zero
initialised), a Bernoulli fire mask per cell, and the Distill alive mask (a cell
stays alive if a 3x3 neighbour's alpha exceeds 0.1 before and after the update).
Autograd stores every intermediate of every step, as in NCALab and Distill.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class DistillNCA(nn.Module):
    """x: (B, C, H, W) -> (B, C, H, W) after ``steps`` steps."""

    def __init__(
        self,
        channels: int = 16,
        hidden: int = 128,
        fire_rate: float = 0.5,
        alive_channel: int = 3,
        threshold: float = 0.1,
    ) -> None:
        super().__init__()
        ident = torch.tensor([[0.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
        sobel_x = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]]) / 8.0
        bank = torch.stack([ident, sobel_x, sobel_x.T])  # (3, 3, 3)
        self.register_buffer("kernel", bank.repeat(channels, 1, 1).unsqueeze(1))  # (3C, 1, 3, 3)
        self.channels, self.fire_rate = channels, fire_rate
        self.alive_channel, self.threshold = alive_channel, threshold
        self.fc1 = nn.Conv2d(3 * channels, hidden, 1)
        self.fc2 = nn.Conv2d(hidden, channels, 1, bias=False)
        nn.init.zeros_(self.fc2.weight)

    def alive(self, x: Tensor) -> Tensor:
        a = x[:, self.alive_channel : self.alive_channel + 1]
        return F.max_pool2d(a, 3, stride=1, padding=1) > self.threshold

    def perceive(self, x: Tensor) -> Tensor:
        kernel: Tensor = self.kernel  # type: ignore[assignment]
        return F.conv2d(x, kernel, padding=1, groups=self.channels)  # (B, 3C, H, W)

    def step(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        pre = self.alive(x)
        dx = self.fc2(F.relu(self.fc1(self.perceive(x))))
        b, _, h, w = x.shape
        fire = torch.rand(b, 1, h, w, generator=generator, device=x.device) < self.fire_rate
        x = x + dx * fire.to(x.dtype)
        return x * (pre & self.alive(x)).to(x.dtype)

    def forward(self, x: Tensor, steps: int, generator: torch.Generator | None = None) -> Tensor:
        for _ in range(steps):
            x = self.step(x, generator)
        return x
