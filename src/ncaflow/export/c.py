"""Export an NCA as one self-contained C99 header (weights + portable inference).

The header is generated from ``nca_runtime.h.in`` (package data): shape
constants and weights are filled in; the inference code is fixed and chooses
padding, alive masking, int8 and the readout with the preprocessor.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from string import Template

import numpy as np
import torch
from torch import Tensor, nn

from ncaflow import __version__
from ncaflow.config import ModelConfig
from ncaflow.export.carrays import INT8_KIND, c_array, c_literal, fire_threshold
from ncaflow.export.compact import (
    StateQuant,
    calibrate_state,
    check_compact,
    render_compact_header,
)
from ncaflow.export.fields import check_name, shared_values
from ncaflow.export.options import adaptive_fields, step_fields
from ncaflow.export.readouts import emitter, readout_defines
from ncaflow.export.spec import ExportError, ModelSpec, cascade_specs, model_spec
from ncaflow.guard.io import atomic_write

__all__ = [
    "CExport",
    "c_cascade_fire_masks",
    "c_fire_masks",
    "export_c",
    "render_cascade_header",
    "render_header",
]

STATES = ("float", "int8")  # the state kinds export_c writes


@dataclass(frozen=True, kw_only=True)
class CExport:
    """What :func:`export_c` wrote."""

    path: Path
    spec: ModelSpec  # a cascade's: its last level, which reads the result out
    name: str
    int8: bool
    steps: int  # a cascade's: the sum over its scales
    levels: tuple[ModelSpec, ...] = ()  # a cascade's specs, one per weight set
    state: str = "float"  # "float" (float32, two buffers) or "int8" (compact, in place)
    quant: StateQuant | None = None  # the int8 state's per-channel coding


def render_header(
    spec: ModelSpec, *, name: str = "nca", int8: bool = False, steps: int = 64
) -> str:
    """The C header text for ``spec`` (see :func:`export_c`)."""
    readout = emitter(spec.readout)
    if readout.needs_image and spec.config.input_channels < 1:
        raise ExportError(f"task {spec.task!r} needs input_channels >= 1 (the image)")
    c = spec.config
    values = shared_values(spec, readout, name=name, int8=int8, steps=steps)
    values["alive_channel"] = -1 if c.alive_channel is None else c.alive_channel
    values["alive_threshold"] = c_literal(c.alive_threshold)[:-1]
    code = readout.c_float(spec)
    values["readout_code"] = Template(code).substitute(p=values["p"], P=values["P"])
    values.update(step_fields(spec, str(values["p"]), str(values["P"])))
    values.update(adaptive_fields(spec, str(values["p"]), str(values["P"])))
    if spec.step_w is not None:
        values["weights"] = (
            f"{values['weights']}\n{c_array('float', f'{name.lower()}__step_w', spec.step_w)}"
        )
    template = resources.files("ncaflow.export").joinpath("nca_runtime.h.in").read_text()
    return Template(template).substitute(values)


def render_cascade_header(
    specs: list[ModelSpec],
    *,
    scales: list[int],
    steps: list[int],
    name: str = "nca",
    int8: bool = False,
) -> str:
    """One C header for a cascade: a single-scale header per weight set (``<name>_l0``, ...;
    one when the scales share weights) and a driver with the single-scale API (see
    ``cascade.h.in``) that runs the scales as :class:`ncaflow.model.cascade.Cascade` does."""
    check_name(name)
    if scales[-1] != 1 or any(a % b for a, b in itertools.pairwise(scales)):
        raise ExportError(
            f"cascade.scales {scales}: the C export needs every scale a multiple of the next "
            "and the last 1 (e.g. [4, 2, 1]), so that the blocks nest"
        )
    p, big = name.lower(), name.upper()
    level_names = [f"{name}_l{i}" for i in range(len(specs))]
    levels = [
        render_header(spec, name=level, int8=int8, steps=n)
        for spec, level, n in zip(specs, level_names, steps, strict=False)
    ]
    last, spec = level_names[-1].lower(), specs[-1]
    cases = []
    for i, n in enumerate(steps):
        lv = level_names[0 if len(specs) == 1 else i].lower()
        cases.append(
            f"    case {i}: {{\n"
            f"        {lv}_rng r;\n"
            f"        r.s = rng ? rng->s : 0u;\n"
            f"        out = {lv}_run(a, b, h, w, {n}, masks, rng ? &r : 0, scratch);\n"
            f"        if (rng) rng->s = r.s;\n"
            f"        break;\n"
            f"    }}"
        )
    readout = emitter(spec.readout)
    signature, body = readout.signature(p), readout.call(p, last)
    api, decl = readout.api(p, big)
    c = spec.config
    values = {
        "name": name,
        "version": __version__,
        "task": spec.task,
        "readout": spec.readout,
        "weights_kind": INT8_KIND if int8 else "float32",
        "scales_text": ", ".join(map(str, scales)),
        "steps_text": ", ".join(map(str, steps)),
        "n_levels": len(specs),
        "api_readout": api,
        "decl_readout": decl,
        "level_implementation": "\n".join(
            f"#ifndef {lv.upper()}_IMPLEMENTATION\n#define {lv.upper()}_IMPLEMENTATION\n#endif"
            for lv in level_names
        ),
        "levels": "\n".join(levels),
        "channels": c.channels,
        "input_channels": c.input_channels,
        "output_channels": c.output_channels,
        "hidden_channels": c.hidden_channels,
        "n_scales": len(scales),
        "coarsest": scales[0],
        "readout_defines": readout_defines(big),
        "readout_id": readout.id,
        "n_classes": readout.n_classes(spec),
        "total_steps": sum(steps),
        "scales": ", ".join(map(str, scales)),
        "steps": ", ".join(map(str, steps)),
        "first": level_names[0].lower(),
        "level_cases": "\n".join(cases),
        "readout_wrapper": f"{signature}\n{{\n    {body}\n}}",
        "p": p,
        "P": big,
    }
    template = resources.files("ncaflow.export").joinpath("cascade.h.in").read_text()
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
    state: str = "float",
    calibration: Tensor | None = None,
    state_quant: StateQuant | None = None,
) -> CExport:
    """Write ``model_or_path`` as a self-contained C99 header at ``out_path`` (atomically).

    model_or_path: an NCA (with ``.run_config``/``.meta`` when loaded, else pass
    ``task``) or a saved model path. name: prefix of every C symbol (``nca_step``,
    ``NCA_CHANNELS``). int8: fc1/fc2 weights as int8 with one float scale per
    output channel. threshold: selfclass vote threshold (default meta or 0.1).
    steps: ``<NAME>_DEFAULT_STEPS`` (default: the longest training rollout, else 64).
    state: "float" (float32 state in two buffers) or "int8" (``nca_compact.h.in``: one
    int8 state updated in place, per-channel scales from ``state_quant``, else calibrated
    on the rollouts of ``calibration`` (B, C, H, W) seed states with Bernoulli(fire_rate)
    fire masks, see :func:`~ncaflow.export.compact.calibrate_state`).
    """
    if state not in STATES:
        raise ExportError(f"state {state!r}: use one of {', '.join(STATES)}")
    if isinstance(model_or_path, str | Path):
        from ncaflow.guard.io import load

        model_or_path = load(model_or_path)
    model = model_or_path
    levels: tuple[ModelSpec, ...] = ()
    cascade = getattr(model, "cascade", None)
    quant: StateQuant | None = None
    model_config = getattr(model, "config", None)
    if isinstance(model_config, ModelConfig) and model_config.adaptive_steps and cascade:
        raise ExportError("model.adaptive_steps exports for a single-scale model only")
    if cascade is not None and state != "float":
        raise ExportError(f"--state {state}: a cascade exports with --state float only")
    if cascade is not None:  # a Cascade: its own step counts, one header per weight set
        levels = tuple(cascade_specs(model, task=task, threshold=threshold))
        spec, steps = levels[-1], sum(cascade.steps)
        text = render_cascade_header(
            list(levels),
            scales=list(cascade.scales),
            steps=list(cascade.steps),
            name=name,
            int8=int8,
        )
    else:
        spec = model_spec(model, task=task, threshold=threshold)
        if steps is None:
            run_config = getattr(model, "run_config", None)
            steps = int(run_config.train.steps[-1]) if run_config is not None else 64
        if state == "float":
            text = render_header(spec, name=name, int8=int8, steps=steps)
        else:
            check_compact(spec)  # before calibrating: what the compact state cannot do
            quant = state_quant or _calibrated(model, spec, calibration, steps)
            text = render_compact_header(spec, quant, name=name, int8=int8, steps=steps)
    out = Path(out_path)
    atomic_write(out, lambda tmp: tmp.write_text(text))
    return CExport(
        path=out,
        spec=spec,
        name=name,
        int8=int8,
        steps=steps,
        levels=levels,
        state=state,
        quant=quant,
    )


def _calibrated(model: nn.Module, spec: ModelSpec, seeds: Tensor | None, steps: int) -> StateQuant:
    if seeds is None:
        raise ExportError(
            "state int8 needs its scales: pass calibration= (example seed states) or state_quant="
        )
    b, _, h, w = seeds.shape
    g = torch.Generator().manual_seed(0)
    masks = (torch.rand(steps, b, 1, h, w, generator=g) < spec.config.fire_rate).float()
    return calibrate_state(model, spec, seeds, steps, masks)


def c_fire_masks(seed: int, steps: int, height: int, width: int, rate: float) -> Tensor:
    """(steps, 1, 1, H, W) float masks the header's PRNG draws after ``<name>_rng_seed(seed)``.

    Feed them to ``model(x, steps, fire_masks=...)`` to reproduce a C run in PyTorch.
    """
    return _xorshift_masks(seed, [(steps, height, width)], rate)[0]


def c_cascade_fire_masks(
    seed: int, scales: list[int], steps: list[int], height: int, width: int, rate: float
) -> list[Tensor]:
    """The masks a cascade header's PRNG draws, one (steps[i], 1, 1, H/s, W/s) tensor per
    scale, for ``cascade(x, fire_masks=...)``."""
    sizes = [(n, height // s, width // s) for s, n in zip(scales, steps, strict=True)]
    return _xorshift_masks(seed, sizes, rate)


def _xorshift_masks(seed: int, sizes: list[tuple[int, int, int]], rate: float) -> list[Tensor]:
    """One (steps, 1, 1, H, W) mask per (steps, H, W), drawn in turn from one xorshift32."""
    thr = fire_threshold(rate)
    s = seed & 0xFFFFFFFF or 0x9E3779B9
    masks = []
    for steps, height, width in sizes:
        out = np.ones((steps, height * width), np.float32)
        for t in range(steps if thr < 1 << 24 else 0):
            row = out[t]
            for i in range(height * width):
                s ^= (s << 13) & 0xFFFFFFFF
                s ^= s >> 17
                s ^= (s << 5) & 0xFFFFFFFF
                row[i] = float((s >> 8) < thr)
        masks.append(torch.from_numpy(out).view(steps, 1, 1, height, width))
    return masks
