"""Export trained NCAs: a self-contained C99 header with portable inference.

``export_c`` writes the header; ``footprint`` sizes it for a microcontroller;
``quantization_report`` measures what int8 weights cost in accuracy.
"""

from __future__ import annotations

from ncaflow.export.c import (
    CExport,
    c_cascade_fire_masks,
    c_fire_masks,
    export_c,
    render_cascade_header,
    render_header,
)
from ncaflow.export.compact import StateQuant, calibrate_state, compact_rollout
from ncaflow.export.footprint import Footprint, cascade_footprint, footprint, format_footprint
from ncaflow.export.quant import QuantReport, dequantized_model, quantization_report, quantize
from ncaflow.export.readout import predict, seed_state
from ncaflow.export.readouts import READOUTS, ReadoutEmitter
from ncaflow.export.report import default_size, export_with_report, parse_size
from ncaflow.export.spec import ExportError, ModelSpec, cascade_specs, model_spec

__all__ = [
    "READOUTS",
    "CExport",
    "ExportError",
    "Footprint",
    "ModelSpec",
    "QuantReport",
    "ReadoutEmitter",
    "StateQuant",
    "c_cascade_fire_masks",
    "c_fire_masks",
    "calibrate_state",
    "cascade_footprint",
    "cascade_specs",
    "compact_rollout",
    "default_size",
    "dequantized_model",
    "export_c",
    "export_with_report",
    "footprint",
    "format_footprint",
    "model_spec",
    "parse_size",
    "predict",
    "quantization_report",
    "quantize",
    "render_cascade_header",
    "render_header",
    "seed_state",
]
