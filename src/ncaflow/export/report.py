"""``ncaflow export c``: write the header, then its footprint and int8 report as JSON beside it."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ncaflow.export.c import export_c
from ncaflow.export.footprint import footprint, format_footprint
from ncaflow.export.quant import quantization_report
from ncaflow.export.readout import seed_state
from ncaflow.export.spec import ExportError, ModelSpec
from ncaflow.io import atomic_write

__all__ = ["default_size", "export_with_report", "parse_size"]

_NATURAL = {"selfclass": (28, 28)}  # MNIST


def parse_size(text: str) -> tuple[int, int]:
    """``"64x64"`` or ``"64"`` -> (64, 64)."""
    parts = text.lower().split("x")
    try:
        h, w = (int(parts[0]), int(parts[-1])) if len(parts) <= 2 else (0, 0)
    except ValueError:
        h = w = 0
    if h < 1 or w < 1:
        raise ExportError(f"--size {text!r}: give HxW with positive integers, e.g. 64x64")
    return h, w


def default_size(model: nn.Module, spec: ModelSpec) -> tuple[int, int]:
    """The grid the model was trained on, from its run config and metadata."""
    run_config = getattr(model, "run_config", None)
    meta: dict[str, Any] = getattr(model, "meta", None) or {}
    data: dict[str, Any] = dict(getattr(run_config, "data", None) or {})
    if spec.task == "growing":
        if "target_shape" in meta:
            _, h, w = meta["target_shape"]
            return int(h), int(w)
        side = int(data.get("size", 40)) + 2 * int(data.get("pad", 16))
        return side, side
    if spec.task in _NATURAL:
        return _NATURAL[spec.task]
    size = meta.get("size", data.get("size"))
    if size is None:
        raise ExportError(f"no image size known for task {spec.task!r}; pass --size HxW")
    if isinstance(size, list):  # own data (data.dataset: folder) may give [H, W]
        return int(size[0]), int(size[-1])
    return int(size), int(size)


def export_with_report(
    model_or_path: nn.Module | str | Path,
    out_path: str | Path,
    *,
    name: str = "nca",
    int8: bool = False,
    size: tuple[int, int] | None = None,
    steps: int | None = None,
    samples: int = 8,
) -> tuple[dict[str, Any], str]:
    """Export, size and check one model; returns (the JSON report, a printable summary).

    The int8 accuracy change is measured in PyTorch on ``samples`` synthetic inputs
    (the growing seed; uniform-noise images for the other tasks) with shared
    Bernoulli(fire_rate) fire masks: it sizes the quantisation error, not task accuracy.
    """
    if isinstance(model_or_path, str | Path):
        from ncaflow.io import load

        model_or_path = load(model_or_path)
    model = model_or_path
    result = export_c(model, out_path, name=name, int8=int8, steps=steps)
    spec = result.spec
    h, w = size or default_size(model, spec)
    fp = footprint(spec, height=h, width=w, steps=result.steps)
    g = torch.Generator().manual_seed(0)
    n = 1 if spec.readout == "rgba" else samples
    c_in = spec.config.input_channels
    images = torch.rand(n, c_in, h, w, generator=g) if c_in else None
    seed = seed_state(spec, images, size=(h, w))
    masks = (torch.rand(result.steps, n, 1, h, w, generator=g) < spec.config.fire_rate).float()
    quant = quantization_report(model, spec, seed, result.steps, fire_masks=masks)
    report = {
        "header": str(Path(out_path).name),
        "name": name,
        "task": spec.task,
        "readout": spec.readout,
        "int8": int8,
        "footprint": fp.to_dict(),
        "int8_vs_float": asdict(quant),
    }
    json_path = Path(out_path).with_suffix(".json")
    atomic_write(json_path, lambda tmp: tmp.write_text(json.dumps(report, indent=2) + "\n"))
    json_path.chmod(0o644)
    what = "prediction" if spec.readout in ("vote", "head") else "pixel"
    summary = "\n".join(
        [
            f"wrote {out_path} ({'int8' if int8 else 'float32'} weights, task {spec.task}, "
            f"readout {spec.readout}) and {json_path.name}",
            format_footprint(fp),
            f"int8 vs float32 (PyTorch, {quant.samples} synthetic input(s), {quant.steps} steps): "
            f"max abs state diff {quant.max_abs_diff:.3g} (max |state| {quant.max_abs_state:.3g}), "
            f"{what} agreement {quant.agreement:.1%}"
            if spec.readout != "rgba"
            else f"int8 vs float32 (PyTorch, seed, {quant.steps} steps): max abs state diff "
            f"{quant.max_abs_diff:.3g} (max |state| {quant.max_abs_state:.3g}), "
            f"visible-cell (alpha > 0.1) agreement {quant.agreement:.1%}",
        ]
    )
    return report, summary
