"""``ncaflow export c``: write the header, then its footprint and int8 report as JSON beside it."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any, cast

import torch
from torch import Tensor, nn

from ncaflow.config import MAX_SIDE, CascadeConfig, short
from ncaflow.export.c import export_c
from ncaflow.export.footprint import cascade_footprint, footprint, format_footprint
from ncaflow.export.quant import quantization_report
from ncaflow.export.readout import seed_state
from ncaflow.export.spec import ExportError, ModelSpec
from ncaflow.io import atomic_write
from ncaflow.tasks import get_task

__all__ = ["default_size", "export_with_report", "parse_size"]


def parse_size(text: str) -> tuple[int, int]:
    """``"64x64"`` or ``"64"`` -> (64, 64)."""
    parts = text.lower().split("x")
    try:
        h, w = (int(parts[0]), int(parts[-1])) if len(parts) <= 2 else (0, 0)
    except ValueError:
        h = w = 0
    if not (1 <= h <= MAX_SIDE and 1 <= w <= MAX_SIDE):
        raise ExportError(f"--size {short(text)}: give HxW with integers 1..{MAX_SIDE}, e.g. 64x64")
    return h, w


def default_size(model: nn.Module, spec: ModelSpec) -> tuple[int, int]:
    """The grid the model was trained on, from its run config and metadata (Task.grid_size)."""
    run_config = getattr(model, "run_config", None)
    meta: dict[str, Any] = getattr(model, "meta", None) or {}
    data: dict[str, Any] = dict(getattr(run_config, "data", None) or {})
    size = get_task(spec.task).grid_size(data, meta)
    if size is None:
        raise ExportError(f"no image size known for task {spec.task!r}; pass --size HxW")
    return size


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
    _check_report_memory(model, size, steps, samples)  # before the header is written
    result = export_c(model, out_path, name=name, int8=int8, steps=steps)
    spec = result.spec
    h, w = size or default_size(model, spec)
    g = torch.Generator().manual_seed(0)
    n = 1 if spec.readout == "rgba" else samples
    c_in, rate = spec.config.input_channels, spec.config.fire_rate
    images = torch.rand(n, c_in, h, w, generator=g) if c_in else None
    seed = seed_state(spec, images, size=(h, w))
    masks: Tensor | list[Tensor]
    if result.levels:  # a cascade: its scales' grids and steps
        schedule = cast(CascadeConfig, model.cascade)
        scales, per_scale = list(schedule.scales), list(schedule.steps)
        if h % scales[0] or w % scales[0]:
            raise ExportError(
                f"--size {h}x{w}: a cascade with scales {scales} needs multiples of {scales[0]}"
            )
        fp = cascade_footprint(result.levels, scales=scales, steps=per_scale, height=h, width=w)
        masks = [
            (torch.rand(k, n, 1, h // s, w // s, generator=g) < rate).float()
            for s, k in zip(scales, per_scale, strict=True)
        ]
    else:
        fp = footprint(spec, height=h, width=w, steps=result.steps)
        masks = (torch.rand(result.steps, n, 1, h, w, generator=g) < rate).float()
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


def _check_report_memory(
    model: nn.Module, size: tuple[int, int] | None, steps: int | None, samples: int
) -> None:
    """The size report rolls out ``samples`` grids and keeps a fire mask per step: refuse
    a size or step count whose buffers exceed this machine's memory."""
    from ncaflow.limits import check_bytes

    config = getattr(model, "run_config", None)
    if config is None:
        return
    meta: dict[str, Any] = getattr(model, "meta", None) or {}
    grid = size or get_task(config.task).grid_size(dict(config.data), meta) or (1, 1)
    n_steps = steps or int(config.train.steps[-1])
    if config.cascade is not None:
        n_steps = sum(config.cascade.steps)
    need = 4.0 * samples * grid[0] * grid[1] * (n_steps + 4 * config.model.channels)
    key = "--size" if size else "--steps" if steps else "train.steps"
    check_bytes(
        need,
        key=key,
        what=f"the size report ({grid[0]}x{grid[1]} grid, {n_steps} steps, {samples} samples)",
        fix="give a smaller --size or fewer --steps",
    )
