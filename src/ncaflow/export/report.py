"""``ncaflow export c``: write the header, then its footprint and int8 report as JSON beside it."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ncaflow.config import MAX_SIDE, CascadeConfig, short
from ncaflow.data.sources import DataError
from ncaflow.data.stored import user_data
from ncaflow.export.c import export_c
from ncaflow.export.compact import check_compact, compact_rollout
from ncaflow.export.footprint import cascade_footprint, footprint, format_footprint
from ncaflow.export.quant import quantization_report
from ncaflow.export.readout import predict, seed_state
from ncaflow.export.readouts import emitter
from ncaflow.export.spec import ExportError, ModelSpec, model_spec
from ncaflow.guard.io import atomic_write
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
    state: str = "float",
) -> tuple[dict[str, Any], str]:
    """Export, size and check one model; returns (the JSON report, a printable summary).

    The int8 accuracy change is measured in PyTorch on ``samples`` synthetic inputs
    (the growing seed; uniform-noise images for the other tasks) with shared
    Bernoulli(fire_rate) fire masks: it sizes the quantisation error, not task accuracy.
    state "int8": the compact state's scales are calibrated on ``samples`` validation
    images of the model's own data (so the data must be at hand, as for evaluate), and
    its agreement with the float model is measured on ``samples`` test images.
    """
    if isinstance(model_or_path, str | Path):
        from ncaflow.guard.io import load

        model_or_path = load(model_or_path)
    model = model_or_path
    _check_report_memory(model, size, steps, samples)  # before the header is written
    compact: dict[str, Any] | None = None
    if state != "float":
        if getattr(model, "cascade", None) is not None:
            raise ExportError(f"--state {state}: a cascade exports with --state float only")
        spec0 = model_spec(model)
        check_compact(spec0)  # before loading any data
        size = size or default_size(model, spec0)
        calib = data_seeds(model, spec0, "val", size, samples)
        result = export_c(
            model, out_path, name=name, int8=int8, steps=steps, state=state, calibration=calib
        )
        assert result.quant is not None
        test = data_seeds(model, spec0, "test", size, samples)
        g = torch.Generator().manual_seed(1)
        test_masks = (
            torch.rand(result.steps, *test[:, :1].shape, generator=g) < spec0.config.fire_rate
        ).float()
        with torch.no_grad():
            ref = model(test, result.steps, fire_masks=test_masks)
        comp = compact_rollout(model, result.quant, test, result.steps, test_masks)
        readout = emitter(spec0.readout)
        compact = {
            "agreement": readout.agreement(predict(spec0, ref), predict(spec0, comp)),
            "unit": readout.unit,
            "samples": int(test.shape[0]),
            "calibration_samples": int(calib.shape[0]),
            "steps": result.steps,
        }
    else:
        result = export_c(model, out_path, name=name, int8=int8, steps=steps)
    spec = result.spec
    h, w = size or default_size(model, spec)
    g = torch.Generator().manual_seed(0)
    n = samples if emitter(spec.readout).needs_image else 1
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
        fp = footprint(spec, height=h, width=w, steps=result.steps, state=state)
        masks = (torch.rand(result.steps, n, 1, h, w, generator=g) < rate).float()
    quant = quantization_report(model, spec, seed, result.steps, fire_masks=masks)
    report = {
        "header": str(Path(out_path).name),
        "name": name,
        "task": spec.task,
        "readout": spec.readout,
        "int8": int8,
        "state": state,
        "footprint": fp.to_dict(),
        "int8_vs_float": asdict(quant),
    }
    if compact is not None:
        report["int8_state_vs_float"] = compact
    json_path = Path(out_path).with_suffix(".json")
    atomic_write(json_path, lambda tmp: tmp.write_text(json.dumps(report, indent=2) + "\n"))
    what = emitter(spec.readout).unit
    lines = [
        f"wrote {out_path} ({'int8' if int8 else 'float32'} weights, {state} state, "
        f"task {spec.task}, readout {spec.readout}) and {json_path.name}"
    ]
    if compact is not None:
        lines.append(
            f"int8 state vs float32 (PyTorch, scales from {compact['calibration_samples']} "
            f"validation images, {compact['samples']} test images, {compact['steps']} steps): "
            f"{compact['unit']} agreement {compact['agreement']:.1%}"
        )
    summary = "\n".join(
        [
            *lines,
            format_footprint(fp),
            f"int8 vs float32 (PyTorch, {quant.samples} synthetic input(s), {quant.steps} steps): "
            f"max abs state diff {quant.max_abs_diff:.3g} (max |state| {quant.max_abs_state:.3g}), "
            f"{what} agreement {quant.agreement:.1%}"
            if emitter(spec.readout).needs_image
            else f"int8 vs float32 (PyTorch, seed, {quant.steps} steps): max abs state diff "
            f"{quant.max_abs_diff:.3g} (max |state| {quant.max_abs_state:.3g}), "
            f"{what} agreement {quant.agreement:.1%}",
        ]
    )
    return report, summary


def _check_report_memory(
    model: nn.Module, size: tuple[int, int] | None, steps: int | None, samples: int
) -> None:
    """The size report rolls out ``samples`` grids and keeps a fire mask per step: refuse
    a size or step count whose buffers exceed this machine's memory."""
    from ncaflow.guard.limits import check_bytes

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


def data_seeds(
    model: nn.Module, spec: ModelSpec, split: str, size: tuple[int, int], n: int
) -> Tensor:
    """(n, C, H, W) seed states of the first ``n`` images of ``split`` of the model's own
    data (its run config), resized to ``size``; the growing task: its seed."""
    if not emitter(spec.readout).needs_image:
        return seed_state(spec, size=size)
    run_config = getattr(model, "run_config", None)
    if run_config is None:
        raise ExportError("--state int8 calibrates on the model's data: export a saved model")
    try:
        task = get_task(spec.task)(config=user_data(run_config), device="cpu")
        task.setup()
        seeds = task.examples(split, n)
    except (OSError, ValueError, DataError) as err:  # ConfigError is a ValueError
        raise ExportError(
            f"--state int8 calibrates its state scales on the model's {split} images, which "
            f"could not be loaded ({err}); make the data available as for `ncaflow evaluate`"
        ) from None
    seeds = seeds.float().cpu()
    if tuple(seeds.shape[-2:]) != tuple(size):
        seeds = seed_state(
            spec,
            F.interpolate(
                seeds[:, : spec.config.input_channels],
                size=size,
                mode="bilinear",
                align_corners=False,
            ),
            size=size,
        )
    return seeds
