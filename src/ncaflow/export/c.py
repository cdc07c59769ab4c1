"""Export an NCA as one self-contained C99 header (weights + portable inference).

The header is generated from ``nca_runtime.h.in`` (package data): shape
constants and weights are filled in; the inference code is fixed and chooses
padding, alive masking, int8 and the readout with the preprocessor.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from string import Template

import numpy as np
import torch
from torch import Tensor, nn

from ncaflow import __version__
from ncaflow.export.footprint import footprint, stack_bytes
from ncaflow.export.quant import quantize_spec
from ncaflow.export.spec import ExportError, ModelSpec, model_spec
from ncaflow.io import atomic_write

__all__ = ["CExport", "c_fire_masks", "export_c", "render_header"]

_READOUT_ID = {"rgba": 0, "vote": 1, "head": 2, "mask": 3}
_API = {
    "rgba": (
        " *   void ${p}_rgba(const float *state, int h, int w, float *rgba);\n"
        " *         copies state channels 0..3 (premultiplied RGBA) into rgba (h*w*4 floats, HWC).",
        "void ${p}_rgba(const float *state, int h, int w, float *rgba);",
    ),
    "mask": (
        " *   void ${p}_mask(const float *state, int h, int w, unsigned char *mask);\n"
        " *         mask[y*w + x] = 1 where the logit (channel ${P}_INPUT_CHANNELS) > 0, else 0.",
        "void ${p}_mask(const float *state, int h, int w, unsigned char *mask);",
    ),
    "vote": (
        " *   int   ${p}_classify(const float *state, int h, int w, float *scores);\n"
        " *         majority vote of the per-cell argmax over the logit channels\n"
        " *         ${P}_INPUT_CHANNELS .. ${P}_INPUT_CHANNELS + ${P}_CLASSES - 1\n"
        " *         (only cells whose image channel 0 > ${P}_VOTE_THRESHOLD\n"
        " *         if ${P}_VOTE_MASKED); ties -> lowest class.\n"
        " *         scores (NULL or ${P}_CLASSES floats) receives the counts.",
        "int ${p}_classify(const float *state, int h, int w, float *scores);",
    ),
    "head": (
        " *   int   ${p}_classify(const float *state, int h, int w, float *scores);\n"
        " *         linear head on the spatial mean of the hidden channels; returns its argmax.\n"
        " *         scores (NULL or ${P}_CLASSES floats) receives the logits.",
        "int ${p}_classify(const float *state, int h, int w, float *scores);",
    ),
}
_INT8_KIND = "int8 per-output-channel (fc1, fc2), float32 elsewhere"
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


@dataclass(frozen=True, kw_only=True)
class CExport:
    """What :func:`export_c` wrote."""

    path: Path
    spec: ModelSpec
    name: str
    int8: bool
    steps: int


def _literal(v: float) -> str:
    return np.format_float_scientific(np.float32(v), unique=True, trim="-") + "f"


def _array(ctype: str, name: str, arr: np.ndarray, per_line: int = 8) -> str:
    flat = np.asarray(arr).reshape(-1)
    fmt = (lambda v: _literal(float(v))) if ctype == "float" else (lambda v: str(int(v)))
    items = [fmt(v) for v in flat]
    lines = [", ".join(items[i : i + per_line]) for i in range(0, len(items), per_line)]
    body = ",\n    ".join(lines) if lines else "0"
    shape = "x".join(str(s) for s in np.asarray(arr).shape)
    return f"/* {shape} */\nstatic const {ctype} {name}[{max(len(items), 1)}] = {{\n    {body}\n}};"


def _weights(spec: ModelSpec, p: str, int8: bool) -> str:
    parts = [_array("float", f"{p}__kernels", spec.kernels), _array("float", f"{p}__b1", spec.b1)]
    if int8:
        q = quantize_spec(spec)
        parts += [
            _array("int8_t", f"{p}__w1", q["w1"], 16),
            _array("float", f"{p}__w1_scale", q["w1_scale"]),
            _array("int8_t", f"{p}__w2", q["w2"], 16),
            _array("float", f"{p}__w2_scale", q["w2_scale"]),
        ]
    else:
        parts += [_array("float", f"{p}__w1", spec.w1), _array("float", f"{p}__w2", spec.w2)]
    if spec.head_w is not None and spec.head_b is not None:
        parts += [
            _array("float", f"{p}__head_w", spec.head_w),
            _array("float", f"{p}__head_b", spec.head_b),
        ]
    return "\n".join(parts)


def fire_threshold(rate: float) -> int:
    """The integer the C PRNG compares ``xorshift32 >> 8`` against: fire when below."""
    return max(1, min(1 << 24, round(rate * (1 << 24))))


def render_header(
    spec: ModelSpec, *, name: str = "nca", int8: bool = False, steps: int = 64
) -> str:
    """The C header text for ``spec`` (see :func:`export_c`)."""
    if not _NAME.match(name):
        raise ExportError(f"name {name!r} is not a C identifier; use letters, digits and '_'")
    if spec.readout != "rgba" and spec.config.input_channels < 1:
        raise ExportError(f"task {spec.task!r} needs input_channels >= 1 (the image)")
    c = spec.config
    p, big = name.lower(), name.upper()
    fp = footprint(spec, height=1, width=1, steps=1)
    api, decl = _API[spec.readout]
    values = {
        "name": name,
        "version": __version__,
        "task": spec.task,
        "readout": spec.readout,
        "weights_kind": _INT8_KIND if int8 else "float32",
        "api_readout": Template(api).substitute(p=p, P=big),
        "decl_readout": Template(decl).substitute(p=p, P=big),
        "flash_bytes": fp.flash_int8_bytes if int8 else fp.flash_float_bytes,
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
        "fire_rate": _literal(c.fire_rate)[:-1],
        "fire_threshold": fire_threshold(c.fire_rate),
        "alive_channel": -1 if c.alive_channel is None else c.alive_channel,
        "alive_threshold": _literal(c.alive_threshold)[:-1],
        "int8": int(int8),
        "readout_id": _READOUT_ID[spec.readout],
        "n_classes": spec.n_classes if spec.readout in ("vote", "head") else 0,
        "vote_masked": int(spec.threshold is not None),
        "vote_threshold": _literal(spec.threshold if spec.threshold is not None else 0.0)[:-1],
        "steps": steps,
        "macs_per_cell": fp.macs_per_cell,
        "weights": _weights(spec, p, int8),
        "p": p,
        "P": big,
    }
    template = resources.files("ncaflow.export").joinpath("nca_runtime.h.in").read_text()
    return Template(template).substitute(values)


def export_c(
    model_or_path: nn.Module | str | Path,
    out_path: str | Path,
    *,
    name: str = "nca",
    task: str | None = None,
    int8: bool = False,
    threshold: float | None = None,
    steps: int | None = None,
) -> CExport:
    """Write ``model_or_path`` as a self-contained C99 header at ``out_path`` (atomically).

    model_or_path: an NCA (with ``.run_config``/``.meta`` when loaded, else pass
    ``task``) or a saved model path. name: prefix of every C symbol (``nca_step``,
    ``NCA_CHANNELS``). int8: fc1/fc2 weights as int8 with one float scale per
    output channel. threshold: selfclass vote threshold (default meta or 0.1).
    steps: ``<NAME>_DEFAULT_STEPS`` (default: the longest training rollout, else 64).
    """
    if isinstance(model_or_path, str | Path):
        from ncaflow.io import load

        model_or_path = load(model_or_path)
    spec = model_spec(model_or_path, task=task, threshold=threshold)
    if steps is None:
        run_config = getattr(model_or_path, "run_config", None)
        steps = int(run_config.train.steps[-1]) if run_config is not None else 64
    text = render_header(spec, name=name, int8=int8, steps=steps)
    out = Path(out_path)
    atomic_write(out, lambda tmp: tmp.write_text(text))
    out.chmod(0o644)  # mkstemp makes it private; a header is for sharing
    return CExport(path=out, spec=spec, name=name, int8=int8, steps=steps)


def c_fire_masks(seed: int, steps: int, height: int, width: int, rate: float) -> Tensor:
    """(steps, 1, 1, H, W) float masks the header's PRNG draws after ``<name>_rng_seed(seed)``.

    Feed them to ``model(x, steps, fire_masks=...)`` to reproduce a C run in PyTorch.
    """
    thr = fire_threshold(rate)
    out = np.ones((steps, height * width), np.float32)
    if thr >= 1 << 24:
        return torch.from_numpy(out).view(steps, 1, 1, height, width)
    s = seed & 0xFFFFFFFF or 0x9E3779B9
    for t in range(steps):
        row = out[t]
        for i in range(height * width):
            s ^= (s << 13) & 0xFFFFFFFF
            s ^= s >> 17
            s ^= (s << 5) & 0xFFFFFFFF
            row[i] = float((s >> 8) < thr)
    return torch.from_numpy(out).view(steps, 1, 1, height, width)
