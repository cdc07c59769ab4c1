"""The template fields that the float header (``nca_runtime.h.in``) and the compact-state
header (``nca_compact.h.in``) share: sizes, the fire rate, the readout's API and the weights."""

from __future__ import annotations

import re

from ncaflow import __version__
from ncaflow.export.carrays import INT8_KIND, c_literal, c_weights, fire_threshold
from ncaflow.export.errors import ExportError
from ncaflow.export.footprint import footprint, stack_bytes
from ncaflow.export.readouts import ReadoutEmitter, readout_defines
from ncaflow.export.spec import ModelSpec

__all__ = ["check_name", "shared_values"]

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def check_name(name: str) -> None:
    """A header's ``name`` becomes the prefix of every C identifier it defines."""
    if not _NAME.match(name):
        raise ExportError(f"name {name!r} is not a C identifier; use letters, digits and '_'")


def shared_values(
    spec: ModelSpec,
    readout: ReadoutEmitter,
    *,
    name: str,
    int8: bool,
    steps: int,
    state_type: str = "float",
    extra_flash: int = 0,
) -> dict[str, object]:
    """Every field both templates fill; ``state_type`` is the C type of the state that the
    readout's API takes, ``extra_flash`` the bytes of constant tables beyond the weights."""
    check_name(name)
    c = spec.config
    p, big = name.lower(), name.upper()
    fp = footprint(spec, height=1, width=1, steps=1)
    api, decl = readout.api(p, big, state_type)
    return {
        "name": name,
        "version": __version__,
        "task": spec.task,
        "readout": spec.readout,
        "weights_kind": INT8_KIND if int8 else "float32",
        "api_readout": api,
        "decl_readout": decl,
        "flash_bytes": (fp.flash_int8_bytes if int8 else fp.flash_float_bytes) + extra_flash,
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
        "p": p,
        "P": big,
    }
