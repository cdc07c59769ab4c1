"""The compact (int8) state of the C export: a per-channel codebook, its calibration, the
PyTorch reference of what the compact header computes, and the header itself.

Each channel's int8 code indexes a 256-entry table of values (in flash): even steps for
the image channels, fine steps near zero and coarser ones far from it for the updated
channels (even int8 steps stall a rollout: updates smaller than half a step vanish, and
a trained segmentation lost 44 % of its pixels that way). Zero is an exact code, so the
zeros of the seed state stay zeros. After every step the C code replaces each updated
value by its nearest code; the state is updated in place with copies of only the rows
the next cells still read (see ``nca_compact.h.in``): one image needs H*W*C bytes plus
a few rows.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources
from string import Template

import numpy as np
import torch
from torch import Tensor, nn

from ncaflow.export.carrays import c_array
from ncaflow.export.errors import ExportError
from ncaflow.export.fields import check_name, shared_values
from ncaflow.export.readouts import emitter
from ncaflow.export.spec import ModelSpec

__all__ = [
    "StateQuant",
    "calibrate_state",
    "check_compact",
    "compact_rollout",
    "render_compact_header",
]

HEADROOM = 1.1  # calibrated magnitudes of the updated channels are widened by this factor
SOFTNESS = 256.0  # updated channels: codes are linear below max/SOFTNESS, logarithmic above


@dataclass(frozen=True, kw_only=True)
class StateQuant:
    """A 256-entry codebook per channel: code q (int8) stands for ``table[c, q + 128]``.

    table: (C, 256) float32, non-decreasing along each row. A value is coded as the
    entry nearest to it (ties to the lower code; beyond the ends: the end), found by
    comparing with the midpoints ``(table[c, i] + table[c, i + 1]) * 0.5`` as the C code does.
    """

    table: np.ndarray

    @classmethod
    def calibrated(cls, amax: np.ndarray, lo: np.ndarray, hi: np.ndarray, n_in: int) -> StateQuant:
        """Frozen input channels (the image): 256 even steps over [lo, hi]. Updated channels:
        ``a * sinh(q / 127 * asinh(m / a))`` for q in -128..127, with m = amax (the largest
        magnitude) and a = m / SOFTNESS: value 0 is code 0, steps are fine near zero (where a
        logit changes sign and small updates add up) and about 5 % of the value far from it."""
        c = len(amax)
        table = np.zeros((c, 256), np.float64)
        k = np.arange(256, dtype=np.float64)
        q = k - 128
        for ch in range(c):
            if ch < n_in:
                top = hi[ch] if hi[ch] > lo[ch] else lo[ch] + 1.0
                table[ch] = lo[ch] + (top - lo[ch]) * k / 255.0
            else:
                m = max(float(amax[ch]), 1e-6)
                a = m / SOFTNESS
                table[ch] = a * np.sinh(q / 127.0 * np.arcsinh(m / a))
        return cls(table=table.astype(np.float32))

    @property
    def channels(self) -> int:
        return int(self.table.shape[0])

    def quantize(self, x: Tensor) -> Tensor:
        """(B, C, H, W) values -> int codes in [-128, 127] (as the C ``__quant``)."""
        t = torch.from_numpy(self.table)
        mids = (t[:, :-1] + t[:, 1:]) * 0.5  # (C, 255) float32, as in C
        flat = x.float().transpose(0, 1).reshape(self.channels, -1).contiguous()  # (C, B*H*W)
        idx = torch.searchsorted(mids, flat, side="left")  # how many midpoints are < value
        b, _, h, w = x.shape
        return (idx - 128).view(self.channels, b, h, w).transpose(0, 1).int()

    def dequantize(self, q: Tensor) -> Tensor:
        t = torch.from_numpy(self.table)  # (C, 256)
        idx = (q.long() + 128).transpose(0, 1).reshape(self.channels, -1)
        b, _, h, w = q.shape
        return torch.gather(t, 1, idx).view(self.channels, b, h, w).transpose(0, 1)

    def round_trip(self, x: Tensor) -> Tensor:
        return self.dequantize(self.quantize(x))


def check_compact(spec: ModelSpec) -> None:
    """Raise ExportError unless ``spec`` can be exported with the compact state."""
    if spec.config.alive_channel is not None:
        raise ExportError(
            f"model.alive_channel is {spec.config.alive_channel}: the compact state has no "
            "alive masking (it needs the whole previous state); export with --state float"
        )
    for key in ("step_channel", "adaptive_steps"):
        if getattr(spec.config, key):
            raise ExportError(f"model.{key}: the compact state lacks it; export with --state float")


def _steps(
    model: nn.Module, seed: Tensor, steps: int, fire_masks: Tensor | None
) -> Iterator[Tensor]:
    b, _, h, w = seed.shape
    masks = fire_masks if fire_masks is not None else torch.ones(steps, b, 1, h, w)
    x = seed
    for t in range(steps):
        x = model(x, 1, fire_masks=masks[t : t + 1])
        yield x


@torch.no_grad()
def calibrate_state(
    model: nn.Module, spec: ModelSpec, seed: Tensor, steps: int, fire_masks: Tensor | None = None
) -> StateQuant:
    """Per-channel ranges of the float rollouts of ``seed`` (B, C, H, W) over ``steps``
    steps (fire_masks (steps, B, 1, H, W) or every cell fires); the updated channels'
    magnitudes get ``HEADROOM``, the frozen input channels keep the range of their images
    (see :meth:`StateQuant.calibrated`)."""
    check_compact(spec)
    lo, hi = seed.amin(dim=(0, 2, 3)), seed.amax(dim=(0, 2, 3))
    amax = seed.abs().amax(dim=(0, 2, 3))
    for x in _steps(model, seed, steps, fire_masks):
        amax = torch.maximum(amax, x.abs().amax(dim=(0, 2, 3)))
    n_in = spec.config.input_channels
    amax = amax * HEADROOM
    if n_in == 0:  # growing: the seed sets channels 3.. to 1
        amax[3:] = torch.clamp(amax[3:], min=1.0)
    return StateQuant.calibrated(
        amax.double().numpy(), lo.double().numpy(), hi.double().numpy(), n_in
    )


@torch.no_grad()
def compact_rollout(
    model: nn.Module, quant: StateQuant, seed: Tensor, steps: int, fire_masks: Tensor | None = None
) -> Tensor:
    """What the compact header computes, in PyTorch: the seed rounded to its codes, then
    after every float step the state rounded again. Returns the final values (B, C, H, W)."""
    x = quant.round_trip(seed)
    b, _, h, w = seed.shape
    masks = fire_masks if fire_masks is not None else torch.ones(steps, b, 1, h, w)
    for t in range(steps):
        x = quant.round_trip(model(x, 1, fire_masks=masks[t : t + 1]))
    return x


def _scales(quant: StateQuant, p: str) -> str:
    return c_array("float", f"{p}__table", quant.table)


def render_compact_header(
    spec: ModelSpec, quant: StateQuant, *, name: str, int8: bool, steps: int
) -> str:
    """The compact-state C header for ``spec`` (see ``nca_compact.h.in``)."""
    check_compact(spec)
    check_name(name)
    c = spec.config
    if quant.table.shape != (c.channels, 256):
        raise ExportError(
            f"state codebook of shape {quant.table.shape}; the model needs ({c.channels}, 256)"
        )
    readout = emitter(spec.readout)
    values = shared_values(
        spec, readout, name=name, int8=int8, steps=steps, state_type="int8_t",
        extra_flash=quant.table.nbytes,
    )  # fmt: skip
    p, big = values["p"], values["P"]
    values["state_scales"] = _scales(quant, str(p))
    values["readout_code"] = Template(readout.c_int8(spec)).substitute(p=p, P=big)
    template = resources.files("ncaflow.export").joinpath("nca_compact.h.in").read_text()
    return Template(template).substitute(values)
