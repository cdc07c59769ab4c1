"""int8 weight quantisation (per output channel, symmetric, float scales) and what it costs."""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from ncaflow.export.readout import predict
from ncaflow.export.readouts import emitter
from ncaflow.export.spec import ModelSpec

__all__ = ["QuantReport", "dequantized_model", "quantization_report", "quantize", "quantize_spec"]


def quantize(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(O, I) float weights -> (O, I) int8 codes in [-127, 127] and (O,) float32 scales.

    w ~ q * scale[:, None].

    A row of zeros gets scale 0 (its codes are all 0).
    """
    w = np.asarray(w, np.float32)
    amax = np.abs(w).max(axis=1)
    scale = (amax / 127.0).astype(np.float32)
    safe = np.where(scale > 0, scale, np.float32(1.0))
    q = np.clip(np.rint(w / safe[:, None]), -127, 127).astype(np.int8)
    return q, scale


def quantize_spec(spec: ModelSpec) -> dict[str, np.ndarray]:
    """The int8 codes and scales of fc1 and fc2: keys w1, w1_scale, w2, w2_scale."""
    q1, s1 = quantize(spec.w1)
    q2, s2 = quantize(spec.w2)
    return {"w1": q1, "w1_scale": s1, "w2": q2, "w2_scale": s2}


def dequantized_model(model: nn.Module) -> nn.Module:
    """A copy of ``model`` whose fc1/fc2 weights are replaced by their int8 round trip.

    Runs in PyTorch exactly what the int8 C header computes (up to float rounding).
    """
    out = copy.deepcopy(model)
    with torch.no_grad():
        for nca in getattr(out, "levels", [out]):  # a cascade's every level
            for name in ("fc1", "fc2"):
                layer = getattr(nca, name)
                w = layer.weight.detach().cpu().float().numpy()
                flat = w.reshape(w.shape[0], -1)
                q, s = quantize(flat)
                deq = (q.astype(np.float32) * s[:, None]).reshape(w.shape)
                layer.weight.copy_(torch.from_numpy(deq))
    return out


@dataclass(frozen=True, kw_only=True)
class QuantReport:
    """Float vs int8 weights on the same inputs and fire masks."""

    max_abs_diff: float  # over every state value after the rollout
    max_abs_state: float  # the largest float state value, for scale
    agreement: float  # equal predictions: class per image, mask per pixel, alpha > 0.1 (rgba)
    samples: int
    steps: int


@torch.no_grad()
def quantization_report(
    model: nn.Module,
    spec: ModelSpec,
    seed: Tensor,
    steps: int,
    *,
    fire_masks: Tensor | list[Tensor] | None = None,
) -> QuantReport:
    """Roll ``seed`` (B, C, H, W) out with float and with int8 weights and compare.

    fire_masks: (steps, B, 1, H, W), shared by both runs (a cascade: one per scale, see
    :meth:`ncaflow.cascade.Cascade.forward`); default: every cell fires.
    """
    if fire_masks is None:
        b, _, h, w = seed.shape
        fire_masks = torch.ones(steps, b, 1, h, w, dtype=seed.dtype)
    ref = model(seed, steps, fire_masks=fire_masks)
    q = dequantized_model(model)(seed, steps, fire_masks=fire_masks)
    agreement = emitter(spec.readout).agreement(predict(spec, ref), predict(spec, q))
    return QuantReport(
        max_abs_diff=float((ref - q).abs().max()),
        max_abs_state=float(ref.abs().max()),
        agreement=agreement,
        samples=int(seed.shape[0]),
        steps=steps,
    )
