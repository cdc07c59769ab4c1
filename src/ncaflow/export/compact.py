"""The compact (int8) state of the C export: per-channel scales, their calibration, the
PyTorch reference of what the compact header computes, and the header itself.

A channel's value is ``(code - zero) * scale`` with an int8 code; zero is an exact code,
so the zeros of the seed state stay zeros. After every step the C code rounds each
updated value to the nearest code (halves away from zero) and saturates; the state is
updated in place with copies of only the rows the next cells still read (see
``nca_compact.h.in``), so one image needs H*W*C bytes plus a few rows.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources
from string import Template

import numpy as np
import torch
from torch import Tensor, nn

from ncaflow import __version__
from ncaflow.export.carrays import INT8_KIND, c_array, c_literal, c_weights, fire_threshold
from ncaflow.export.errors import ExportError
from ncaflow.export.footprint import footprint, stack_bytes
from ncaflow.export.readouts import emitter, readout_defines
from ncaflow.export.spec import ModelSpec

__all__ = ["StateQuant", "calibrate_state", "compact_rollout", "render_compact_header"]

HEADROOM = 1.25  # calibrated ranges of the updated channels are widened by this factor


@dataclass(frozen=True, kw_only=True)
class StateQuant:
    """Per-channel affine int8 coding of a state: value = (code - zero) * scale.

    scale: (C,) float32 > 0; zero: (C,) int in [-128, 127].
    """

    scale: np.ndarray
    zero: np.ndarray

    @classmethod
    def from_ranges(cls, lo: np.ndarray, hi: np.ndarray) -> StateQuant:
        """Codes spanning [lo, hi] (each widened to contain 0, which is an exact code)."""
        lo = np.minimum(np.asarray(lo, np.float64), 0.0)
        hi = np.maximum(np.asarray(hi, np.float64), 0.0)
        scale = np.maximum((hi - lo) / 255.0, 1e-6)
        zero = np.clip(np.rint(-128.0 - lo / scale), -128, 127).astype(np.int32)
        return cls(scale=scale.astype(np.float32), zero=zero)

    def quantize(self, x: Tensor) -> Tensor:
        """(B, C, H, W) values -> int codes (as the C ``__quant``: float32 division, halves
        away from zero, saturated)."""
        s = torch.from_numpy(self.scale).view(1, -1, 1, 1)
        z = torch.from_numpy(self.zero).view(1, -1, 1, 1)
        t = (x.float() / s).clamp(-1024.0, 1024.0)
        t = torch.trunc(t + torch.where(t < 0, -0.5, 0.5).float())
        return (t.int() + z).clamp(-128, 127)

    def dequantize(self, q: Tensor) -> Tensor:
        s = torch.from_numpy(self.scale).view(1, -1, 1, 1)
        z = torch.from_numpy(self.zero).view(1, -1, 1, 1)
        return (q - z).float() * s

    def round_trip(self, x: Tensor) -> Tensor:
        return self.dequantize(self.quantize(x))


def _check(spec: ModelSpec) -> None:
    if spec.config.alive_channel is not None:
        raise ExportError(
            f"model.alive_channel is {spec.config.alive_channel}: the compact state has no "
            "alive masking (it needs the whole previous state); export with --state float"
        )


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
    ranges get ``HEADROOM``, the frozen input channels keep the range of their images."""
    _check(spec)
    lo, hi = seed.amin(dim=(0, 2, 3)), seed.amax(dim=(0, 2, 3))
    for x in _steps(model, seed, steps, fire_masks):
        lo, hi = torch.minimum(lo, x.amin(dim=(0, 2, 3))), torch.maximum(hi, x.amax(dim=(0, 2, 3)))
    n_in = spec.config.input_channels
    lo[n_in:], hi[n_in:] = lo[n_in:] * HEADROOM, hi[n_in:] * HEADROOM
    if n_in == 0:  # growing: the seed sets channels 3.. to 1
        hi[3:] = torch.clamp(hi[3:], min=1.0)
    return StateQuant.from_ranges(lo.double().numpy(), hi.double().numpy())


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
    return "\n".join(
        [
            c_array("float", f"{p}__scale", quant.scale),
            c_array("int8_t", f"{p}__zero", quant.zero.astype(np.int8), 16),
        ]
    )


def render_compact_header(
    spec: ModelSpec, quant: StateQuant, *, name: str, int8: bool, steps: int
) -> str:
    """The compact-state C header for ``spec`` (see ``nca_compact.h.in``)."""
    _check(spec)
    if not re.match(r"[A-Za-z_][A-Za-z0-9_]*\Z", name):
        raise ExportError(f"name {name!r} is not a C identifier; use letters, digits and '_'")
    c = spec.config
    if quant.scale.shape != (c.channels,) or quant.zero.shape != (c.channels,):
        raise ExportError(
            f"state scales for {quant.scale.shape} channels; the model has {c.channels}"
        )
    readout = emitter(spec.readout)
    p, big = name.lower(), name.upper()
    fp = footprint(spec, height=1, width=1, steps=1)
    api, decl = readout.api(p, big, "int8_t")
    values = {
        "name": name,
        "version": __version__,
        "task": spec.task,
        "readout": spec.readout,
        "weights_kind": INT8_KIND if int8 else "float32",
        "api_readout": api,
        "decl_readout": decl,
        "flash_bytes": (fp.flash_int8_bytes if int8 else fp.flash_float_bytes) + 5 * c.channels,
        "stack_bytes": stack_bytes(spec),
        "channels": c.channels,
        "input_channels": c.input_channels,
        "output_channels": c.output_channels,
        "hidden_channels": c.hidden_channels,
        "updated_channels": spec.updated,
        "hidden_width": c.hidden_width,
        "n_filters": spec.n_filters,
        "kernel_size": spec.kernel_size,
        "filter_banks": spec.kernels.shape[0],
        "padding": f"{big}_PAD_{c.padding.upper()}",
        "fire_rate": c_literal(c.fire_rate)[:-1],
        "fire_threshold": fire_threshold(c.fire_rate),
        "int8": int(int8),
        "readout_defines": readout_defines(big),
        "readout_id": readout.id,
        "n_classes": readout.n_classes(spec),
        "vote_masked": int(spec.threshold is not None),
        "vote_threshold": c_literal(spec.threshold if spec.threshold is not None else 0.0)[:-1],
        "steps": steps,
        "macs_per_cell": fp.macs_per_cell,
        "weights": c_weights(spec, p, int8),
        "state_scales": _scales(quant, p),
        "readout_code": Template(readout.c_int8()).substitute(p=p, P=big),
        "p": p,
        "P": big,
    }
    template = resources.files("ncaflow.export").joinpath("nca_compact.h.in").read_text()
    return Template(template).substitute(values)
