"""C text of the exported arrays: float literals, weight tables, the fire threshold."""

from __future__ import annotations

import numpy as np

from ncaflow.export.quant import quantize_spec
from ncaflow.export.spec import ModelSpec

__all__ = ["INT8_KIND", "c_array", "c_literal", "c_weights", "fire_threshold"]

INT8_KIND = "int8 per-output-channel (fc1, fc2), float32 elsewhere"


def c_literal(v: float) -> str:
    return np.format_float_scientific(np.float32(v), unique=True, trim="-") + "f"


def c_array(ctype: str, name: str, arr: np.ndarray, per_line: int = 8) -> str:
    flat = np.asarray(arr).reshape(-1)
    fmt = (lambda v: c_literal(float(v))) if ctype == "float" else (lambda v: str(int(v)))
    items = [fmt(v) for v in flat]
    lines = [", ".join(items[i : i + per_line]) for i in range(0, len(items), per_line)]
    body = ",\n    ".join(lines) if lines else "0"
    shape = "x".join(str(s) for s in np.asarray(arr).shape)
    return f"/* {shape} */\nstatic const {ctype} {name}[{max(len(items), 1)}] = {{\n    {body}\n}};"


def c_weights(spec: ModelSpec, p: str, int8: bool) -> str:
    parts = [c_array("float", f"{p}__kernels", spec.kernels), c_array("float", f"{p}__b1", spec.b1)]
    if int8:
        q = quantize_spec(spec)
        parts += [
            c_array("int8_t", f"{p}__w1", q["w1"], 16),
            c_array("float", f"{p}__w1_scale", q["w1_scale"]),
            c_array("int8_t", f"{p}__w2", q["w2"], 16),
            c_array("float", f"{p}__w2_scale", q["w2_scale"]),
        ]
    else:
        parts += [c_array("float", f"{p}__w1", spec.w1), c_array("float", f"{p}__w2", spec.w2)]
    if spec.head_w1 is not None and spec.head_b1 is not None:  # an MLP head's hidden layer
        parts += [
            c_array("float", f"{p}__head_w1", spec.head_w1),
            c_array("float", f"{p}__head_b1", spec.head_b1),
        ]
    if spec.head_w is not None and spec.head_b is not None:
        parts += [
            c_array("float", f"{p}__head_w", spec.head_w),
            c_array("float", f"{p}__head_b", spec.head_b),
        ]
    return "\n".join(parts)


def fire_threshold(rate: float) -> int:
    """The integer the C PRNG compares ``xorshift32 >> 8`` against: fire when below."""
    return max(1, min(1 << 24, round(rate * (1 << 24))))
