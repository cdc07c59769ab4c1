"""Cascaded multi-scale NCA and the one function that turns a RunConfig into a model.

A cascade runs coarse to fine: at scale ``s`` the input channels are the image
average-pooled by ``s``; the first scale starts from the pooled seed state,
every later one from the previous scale's state upsampled (nearest) with the
finer image put back into the input channels. The last scale must be 1, so the
output has the seed's resolution and the cascade is a drop-in for :class:`NCA`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ncaflow.config import CascadeConfig, ConfigError, ModelConfig, RunConfig
from ncaflow.model.nca import NCA

__all__ = ["Cascade", "build_model"]


class Cascade(nn.Module):
    """Coarse-to-fine stack of NCAs (one per scale, or one shared)."""

    def __init__(self, *, model: ModelConfig, cascade: CascadeConfig, impl: str = "auto") -> None:
        super().__init__()
        cascade.validate()
        if cascade.scales[-1] != 1:
            raise ConfigError("key 'cascade.scales': the last scale must be 1 (full resolution)")
        self.config = model
        self.cascade = cascade
        n = 1 if cascade.shared else len(cascade.scales)
        self.levels = nn.ModuleList(NCA(config=model, impl=impl) for _ in range(n))

    @property
    def total_steps(self) -> int:
        return sum(self.cascade.steps)

    def forward(
        self,
        x: Tensor,
        steps: int | None = None,
        *,
        generator: torch.Generator | None = None,
        fire_masks: Sequence[Tensor] | None = None,
        checkpoint_every: int = 0,
        callback: Callable[[int, Tensor], None] | None = None,
    ) -> Tensor:
        """x: (B, C, H, W) seed -> (B, C, H, W). The step counts come from the cascade
        config; ``steps`` is accepted for interface parity with :class:`NCA` and ignored.

        fire_masks: one (steps[i], B, 1, H/s, W/s) tensor per scale instead of sampling
        (the C export's tests share them, :func:`ncaflow.export.c_fire_masks`)."""
        del steps
        if fire_masks is not None and len(fire_masks) != len(self.cascade.scales):
            raise ValueError(
                f"fire_masks: one tensor per scale ({len(self.cascade.scales)}), "
                f"got {len(fire_masks)}"
            )
        n_in = self.config.input_channels
        h, w = x.shape[-2:]
        image = x[:, :n_in]
        state: Tensor | None = None
        done = 0
        for i, (scale, n) in enumerate(zip(self.cascade.scales, self.cascade.steps, strict=True)):
            size = (h // scale, w // scale)
            if state is None:
                rest = F.adaptive_avg_pool2d(x[:, n_in:], size) if scale > 1 else x[:, n_in:]
            else:
                rest = F.interpolate(state[:, n_in:], size=size, mode="nearest")
            img = F.adaptive_avg_pool2d(image, size) if scale > 1 else image
            state = torch.cat([img, rest], 1)  # (B, C, H/s, W/s)
            nca = self.levels[0 if self.cascade.shared else i]
            level_cb = None
            if callback is not None:
                offset = done

                def level_cb(t: int, s: Tensor, offset: int = offset) -> None:
                    callback(offset + t, F.interpolate(s, size=(h, w), mode="nearest"))

            state = nca(
                state,
                n,
                generator=generator,
                fire_masks=None if fire_masks is None else fire_masks[i],
                checkpoint_every=checkpoint_every,
                callback=level_cb,
            )
            done += n
        assert state is not None
        return state


def build_model(config: RunConfig, impl: str = "auto") -> nn.Module:
    """An :class:`NCA`, or a :class:`Cascade` when the config has a ``cascade`` section.

    ``impl`` picks the NCA implementation (same results; see :class:`NCA`).
    With ``model.head > 0`` the model also gets ``head``, a linear layer from the
    spatially averaged hidden channels (B, hidden) to (B, head) logits; with
    ``model.head_hidden = N > 0`` an MLP: Linear(hidden, N), ReLU, Linear(N, head).
    """
    m = config.model
    model: nn.Module
    if config.cascade is not None:
        model = Cascade(model=m, cascade=config.cascade, impl=impl)
    else:
        model = NCA(config=m, impl=impl)
    if m.head and m.head_hidden:
        model.head = nn.Sequential(
            nn.Linear(m.hidden_channels, m.head_hidden), nn.ReLU(), nn.Linear(m.head_hidden, m.head)
        )
    elif m.head:
        model.head = nn.Linear(m.hidden_channels, m.head)
    return model
