"""The neural cellular automaton: perception, update rule, fire and alive masks, rollout.

State layout, ``(B, C, H, W)`` with ``C = input + output + hidden`` channels::

    [ input (frozen) | output | hidden ]

One step::

    p  = perceive(x)                      (B, C*K, H, W)   K filters per channel
    dx = W2 @ relu(W1 @ p + b1)           (B, C_upd, H, W) 1x1 convs, W2 starts at 0
    x[:, input:] += dx * fire             fire ~ Bernoulli(fire_rate), (B, 1, H, W)
    x[:, input:] *= alive_before & alive_after   (optional, Distill alive masking)

Nothing here knows about tasks.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from ncaflow.config import ModelConfig

__all__ = ["NCA", "fixed_filters", "perceive"]

_SOBEL_X = [[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]]
_LAPLACE = [[1.0, 2.0, 1.0], [2.0, -12.0, 2.0], [1.0, 2.0, 1.0]]


def fixed_filters(laplace: bool = False) -> Tensor:
    """Identity, Sobel x/8, Sobel y/8 (and Laplace/16) as a ``(K, 3, 3)`` bank."""
    ident = torch.zeros(3, 3)
    ident[1, 1] = 1.0
    sx = torch.tensor(_SOBEL_X) / 8.0
    bank = [ident, sx, sx.T]
    if laplace:
        bank.append(torch.tensor(_LAPLACE) / 16.0)
    return torch.stack(bank)


def perceive(x: Tensor, kernels: Tensor, padding: str) -> Tensor:
    """Depthwise-convolve every channel with every kernel.

    x: (B, C, H, W), kernels: (C*K, 1, k, k) -> (B, C*K, H, W); output channel
    ``c*K + j`` is channel ``c`` seen through kernel ``j``.
    """
    r = kernels.shape[-1] // 2
    mode = "constant" if padding == "zeros" else padding
    x = F.pad(x, (r, r, r, r), mode=mode)
    return F.conv2d(x, kernels, groups=x.shape[1])


class NCA(nn.Module):
    """A single-scale NCA built from a :class:`~ncaflow.config.ModelConfig`."""

    def __init__(self, *, config: ModelConfig) -> None:
        super().__init__()
        config.validate()
        self.config = config
        c = config.channels
        self.updated = config.output_channels + config.hidden_channels
        if config.perception == "learned":
            k = config.kernel_size
            learned = torch.randn(c * config.learned_filters, 1, k, k) * (1.0 / k)
            self.filters = nn.Parameter(learned)
            n_filters = 1 + config.learned_filters
        else:
            bank = fixed_filters(laplace=config.perception == "sobel_laplace")
            self.register_buffer("bank", bank.repeat(c, 1, 1).unsqueeze(1), persistent=False)
            n_filters = bank.shape[0]
        self.n_filters = n_filters
        self.fc1 = nn.Conv2d(c * n_filters, config.hidden_width, 1)
        self.fc2 = nn.Conv2d(config.hidden_width, self.updated, 1, bias=False)
        nn.init.zeros_(self.fc2.weight)  # the first step leaves the state unchanged

    # -- one step ---------------------------------------------------------------

    def kernels(self) -> Tensor:
        """The perception bank as ``(C*K, 1, k, k)`` depthwise weights."""
        if self.config.perception != "learned":
            return self.bank
        c, n, k = self.config.channels, self.config.learned_filters, self.config.kernel_size
        ident = torch.zeros(c, 1, 1, k, k, device=self.filters.device, dtype=self.filters.dtype)
        ident[..., k // 2, k // 2] = 1.0
        learned = self.filters.view(c, n, 1, k, k)
        return torch.cat([ident, learned], dim=1).view(c * (n + 1), 1, k, k)

    def alive(self, x: Tensor) -> Tensor:
        """(B, C, H, W) -> (B, 1, H, W) bool: some 3x3 neighbour's alpha exceeds the threshold."""
        a = x[:, self.config.alive_channel : self.config.alive_channel + 1]  # type: ignore[operator]
        return F.max_pool2d(a, 3, stride=1, padding=1) > self.config.alive_threshold

    def update(self, x: Tensor) -> Tensor:
        """(B, C, H, W) -> (B, C_upd, H, W): the residual proposed for every updatable channel."""
        p = perceive(x, self.kernels(), self.config.padding)  # (B, C*K, H, W)
        return self.fc2(F.relu(self.fc1(p)))

    def step(self, x: Tensor, fire: Tensor | None) -> Tensor:
        """One NCA step. fire: (B, 1, H, W) 0/1 mask, or None to update every cell."""
        n_in = self.config.input_channels
        use_alive = self.config.alive_channel is not None
        pre = self.alive(x) if use_alive else None
        dx = self.update(x)
        if fire is not None:
            dx = dx * fire
        y = x[:, n_in:] + dx
        if use_alive:
            full = torch.cat([x[:, :n_in], y], 1) if n_in else y
            y = y * (pre & self.alive(full)).to(y.dtype)  # type: ignore[operator]
        return torch.cat([x[:, :n_in], y], 1) if n_in else y

    # -- rollout ----------------------------------------------------------------

    def fire_mask(self, x: Tensor, generator: torch.Generator | None) -> Tensor | None:
        """(B, 1, H, W) float Bernoulli(fire_rate) mask, or None when every cell fires."""
        rate = self.config.fire_rate
        if rate >= 1.0:
            return None
        b, _, h, w = x.shape
        u = torch.rand(b, 1, h, w, generator=generator, device=x.device, dtype=x.dtype)
        return (u < rate).to(x.dtype)

    def forward(
        self,
        x: Tensor,
        steps: int,
        *,
        generator: torch.Generator | None = None,
        fire_masks: Tensor | None = None,
        checkpoint_every: int = 0,
        callback: Callable[[int, Tensor], None] | None = None,
    ) -> Tensor:
        """Run ``steps`` steps from state x (B, C, H, W); returns the final state.

        fire_masks: optional (steps, B, 1, H, W) masks to use instead of sampling
        (the C export tests share them). checkpoint_every > 0 recomputes the
        rollout in chunks of that many steps during backward (saves memory).
        Masks are drawn outside checkpointed chunks, so recomputation is exact.
        callback(t, state) is called after every step (animations).
        """
        t = 0
        while t < steps:
            n = min(checkpoint_every, steps - t) if checkpoint_every > 0 else steps - t
            if fire_masks is not None:
                masks = [fire_masks[t + i] for i in range(n)]
            else:
                masks = [self.fire_mask(x, generator) for _ in range(n)]
            if checkpoint_every > 0 and torch.is_grad_enabled() and callback is None:
                x = checkpoint(self._chunk, x, *masks, use_reentrant=False)
            else:
                for i, m in enumerate(masks):
                    x = self.step(x, m)
                    if callback is not None:
                        callback(t + i + 1, x)
            t += n
        return x

    def _chunk(self, x: Tensor, *masks: Tensor | None) -> Tensor:
        for m in masks:
            x = self.step(x, m)
        return x
