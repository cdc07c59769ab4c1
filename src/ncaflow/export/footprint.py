"""Microcontroller footprint of an exported NCA: flash, RAM, multiply-adds."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from ncaflow.export.spec import ModelSpec

__all__ = ["Footprint", "cascade_footprint", "footprint", "format_footprint", "stack_bytes"]

F32 = 4


@dataclass(frozen=True, kw_only=True)
class Footprint:
    """Sizes in bytes; MACs count multiply-adds of perception + fc1 + fc2 (every cell fires)."""

    height: int
    width: int
    steps: int
    parameters: int
    flash_float_bytes: int  # weights as float32
    flash_int8_bytes: int  # fc1/fc2 as int8 + float scales, the rest float32
    ram_state_bytes: int  # float: two state buffers (float32, H*W*C each); int8: one, H*W*C bytes
    ram_scratch_bytes: int  # float: alive-mask scratch (H*W bytes); int8: the saved rows
    ram_stack_bytes: int  # per-cell vectors on the stack inside step()
    ram_total_bytes: int
    macs_per_cell: int
    macs_per_step: int
    macs_per_inference: int
    state: str = "float"  # the exported state: "float" or "int8" (see export_c)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def stack_bytes(spec: ModelSpec) -> int:
    """Bytes of the perception, hidden and update vectors ``step`` keeps on the stack."""
    c = spec.config
    return F32 * (c.channels * spec.n_filters + c.hidden_width + spec.updated)


def footprint(
    spec: ModelSpec, *, height: int, width: int, steps: int, state: str = "float"
) -> Footprint:
    """Footprint of ``spec`` on an ``height`` x ``width`` grid run for ``steps`` steps;
    state "int8": the compact header (one int8 state, updated in place with a ring of
    kernel_size // 2 + 1 saved rows, plus kernel_size // 2 more with circular padding)."""
    c = spec.config
    perc = c.channels * spec.n_filters
    head = sum(
        a.size for a in (spec.head_w, spec.head_b, spec.head_w1, spec.head_b1) if a is not None
    )
    step = 0 if spec.step_w is None else spec.step_w.size  # model.step_channel
    floats_kept = spec.kernels.size + spec.b1.size + head + step  # stay float in int8 exports
    params = floats_kept + spec.w1.size + spec.w2.size
    cells = height * width
    macs_cell = perc * spec.kernel_size**2 + perc * c.hidden_width + c.hidden_width * spec.updated
    if state == "int8":
        r = spec.kernel_size // 2
        rows = r + 1 + (r if c.padding == "circular" else 0)
        state_bytes, scratch = cells * c.channels, rows * width * c.channels
    else:
        state_bytes = 2 * cells * c.channels * F32
        scratch = cells if c.alive_channel is not None else 0
    stack = stack_bytes(spec)
    return Footprint(
        height=height,
        width=width,
        steps=steps,
        parameters=int(params),
        flash_float_bytes=int(F32 * params),
        flash_int8_bytes=int(
            F32 * floats_kept + spec.w1.size + spec.w2.size + F32 * (c.hidden_width + spec.updated)
        ),
        ram_state_bytes=state_bytes,
        ram_scratch_bytes=scratch,
        ram_stack_bytes=stack,
        ram_total_bytes=state_bytes + scratch + stack,
        macs_per_cell=int(macs_cell),
        macs_per_step=int(macs_cell * cells),
        macs_per_inference=int(macs_cell * cells * steps),
        state=state,
    )


def cascade_footprint(
    levels: Sequence[ModelSpec], *, scales: list[int], steps: list[int], height: int, width: int
) -> Footprint:
    """Footprint of a cascade header: every level's weights, two full-size states, the scratch
    that keeps the image (and the alive mask), and each scale's steps on its own grid
    (macs_per_step: their mean over all steps)."""
    per = [footprint(spec, height=height, width=width, steps=1) for spec in levels]
    c = levels[-1].config
    cells = height * width
    macs = sum(
        per[0].macs_per_cell * (cells // s**2) * n for s, n in zip(scales, steps, strict=True)
    )
    state, stack = per[0].ram_state_bytes, max(fp.ram_stack_bytes for fp in per)
    scratch = cells * (F32 * c.input_channels + 1)
    return Footprint(
        height=height,
        width=width,
        steps=sum(steps),
        parameters=sum(fp.parameters for fp in per),
        flash_float_bytes=sum(fp.flash_float_bytes for fp in per),
        flash_int8_bytes=sum(fp.flash_int8_bytes for fp in per),
        ram_state_bytes=state,
        ram_scratch_bytes=scratch,
        ram_stack_bytes=stack,
        ram_total_bytes=state + scratch + stack,
        macs_per_cell=per[0].macs_per_cell,
        macs_per_step=macs // sum(steps),
        macs_per_inference=macs,
    )


def _kib(n: int) -> str:
    return f"{n:,} B ({n / 1024:.1f} KiB)"


def _states(fp: Footprint) -> str:
    return "1 int8 state" if fp.state == "int8" else "2 float32 states"


def _scratch(fp: Footprint) -> str:
    return "RAM, saved rows" if fp.state == "int8" else "RAM, alive scratch"


def format_footprint(fp: Footprint) -> str:
    """A small human-readable table."""
    rows = [
        ("parameters", f"{fp.parameters:,}"),
        ("flash, float32 weights", _kib(fp.flash_float_bytes)),
        ("flash, int8 weights", _kib(fp.flash_int8_bytes)),
        (f"RAM, {_states(fp)} at {fp.height}x{fp.width}", _kib(fp.ram_state_bytes)),
        (
            "RAM, saved rows" if fp.state == "int8" else "RAM, alive scratch",
            _kib(fp.ram_scratch_bytes),
        ),
        ("RAM, stack in step()", _kib(fp.ram_stack_bytes)),
        ("RAM, total", _kib(fp.ram_total_bytes)),
        ("MACs per cell and step", f"{fp.macs_per_cell:,}"),
        ("MACs per step", f"{fp.macs_per_step:,}"),
        (f"MACs per inference ({fp.steps} steps)", f"{fp.macs_per_inference:,}"),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)
