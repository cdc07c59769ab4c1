"""Footprint numbers, the EXAMPLE.md program, the CLI and the errors of the C export."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
import torch
from _cexport import CFLAGS, random_model

from ncaflow.cli import main
from ncaflow.config import CascadeConfig, ModelConfig, RunConfig
from ncaflow.export import ExportError, export_c, footprint, model_spec, parse_size
from ncaflow.guard.io import save
from ncaflow.model.cascade import build_model

EXAMPLE = Path(__file__).parents[2] / "src" / "ncaflow" / "export" / "EXAMPLE.md"


def test_footprint_counts_by_hand() -> None:
    cfg = ModelConfig(output_channels=4, hidden_channels=4, hidden_width=16, alive_channel=3)
    spec = model_spec(random_model(cfg, seed=0), task="growing")
    fp = footprint(spec, height=10, width=20, steps=5)
    c, k, hw = 8, 3, 16  # channels, filters (identity, sobel x, sobel y), hidden width
    params = k * 9 + hw + hw * c * k + 8 * hw  # shared 3x3 bank, b1, w1, w2
    assert fp.parameters == params
    assert fp.flash_float_bytes == 4 * params
    assert fp.flash_int8_bytes == 4 * (k * 9 + hw) + hw * c * k + 8 * hw + 4 * (hw + 8)
    assert fp.ram_state_bytes == 2 * 200 * c * 4
    assert fp.ram_scratch_bytes == 200
    assert fp.macs_per_cell == c * k * 9 + c * k * hw + hw * 8
    assert fp.macs_per_inference == 5 * 200 * fp.macs_per_cell


def test_example_compiles_and_runs(tmp_path: Path) -> None:
    """EXAMPLE.md's growing program, built with its own gcc command (the project's
    warnings-as-errors flags on top), runs and prints the centre cell's alpha."""
    text = EXAMPLE.read_text()
    code = re.search(r"```c\n(.*?)```", text, re.S)
    build = re.search(r"`(gcc [^`]*main\.c[^`]*)`", text)
    assert code is not None and build is not None
    assert len(code.group(1).splitlines()) <= 24
    header = re.search(r'#include "(\w+\.h)"', code.group(1))
    assert header is not None
    cfg = ModelConfig(output_channels=4, hidden_channels=4, hidden_width=16, alive_channel=3)
    export_c(random_model(cfg, seed=0), tmp_path / header.group(1), task="growing", steps=3)
    (tmp_path / "main.c").write_text(code.group(1))
    res = subprocess.run(
        [*build.group(1).split(), *CFLAGS], cwd=tmp_path, capture_output=True, text=True
    )
    assert res.returncode == 0, res.stderr
    run = subprocess.run([str(tmp_path / "main")], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    alpha = re.fullmatch(r"alpha at the centre: (-?\d+\.\d+)\n", run.stdout)
    assert alpha is not None, run.stdout
    assert 0.0 <= float(alpha.group(1)) <= 1.0


def test_cli_writes_header_and_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = RunConfig(
        task="selfclass",
        model=ModelConfig(
            input_channels=1,
            output_channels=10,
            hidden_channels=4,
            hidden_width=16,
            alive_channel=0,
        ),
    )
    model = random_model(cfg.model, seed=0)
    save(model, cfg, tmp_path / "m", meta={"threshold": 0.2})
    out = tmp_path / "out" / "digits.h"
    rc = main(
        [
            "export",
            "c",
            str(tmp_path / "m"),
            "--out",
            str(out),
            "--int8",
            "--size",
            "12x10",
            "--steps",
            "4",
            "--name",
            "digits",
        ]
    )
    assert rc == 0
    text = out.read_text()
    assert "#define DIGITS_INT8 1" in text and "DIGITS_VOTE_THRESHOLD 2e-01f" in text
    report = json.loads(out.with_suffix(".json").read_text())
    assert report["footprint"]["height"] == 12 and report["footprint"]["width"] == 10
    assert report["footprint"]["steps"] == 4
    assert 0.0 <= report["int8_vs_float"]["agreement"] <= 1.0
    assert "MACs per inference (4 steps)" in capsys.readouterr().out


def test_errors_name_the_problem(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = ModelConfig(output_channels=4, hidden_channels=4, hidden_width=8)
    model = random_model(cfg, seed=0)
    with pytest.raises(ExportError, match="unknown task"):
        export_c(model, tmp_path / "a.h")
    with pytest.raises(ExportError, match="not a C identifier"):
        export_c(model, tmp_path / "a.h", task="growing", name="my-model")
    with torch.no_grad():
        model.fc1.bias[0] = float("nan")
    with pytest.raises(ExportError, match=r"fc1\.bias.*NaN"):
        export_c(model, tmp_path / "a.h", task="growing")
    odd = CascadeConfig(scales=[3, 2, 1], steps=[2, 2, 2])  # 3 x 3 blocks do not nest in 2 x 2
    cascade = build_model(RunConfig(task="growing", model=cfg, cascade=odd))
    with pytest.raises(ExportError, match="multiple of the next"):
        export_c(cascade, tmp_path / "a.h", task="growing")
    assert not (tmp_path / "a.h").exists()  # nothing half-written
    with pytest.raises(ExportError, match="HxW"):
        parse_size("12y")
    assert main(["export", "c", str(tmp_path / "missing"), "--out", str(tmp_path / "b.h")]) == 1
    assert "missing" in capsys.readouterr().err


def test_cli_state_int8_refuses_alive_masking_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = RunConfig(
        task="selfclass",
        model=ModelConfig(input_channels=1, output_channels=10, hidden_channels=4, alive_channel=0),
    )
    save(random_model(cfg.model, seed=0), cfg, tmp_path / "m")
    out = tmp_path / "out.h"
    assert main(["export", "c", str(tmp_path / "m"), "--out", str(out), "--state", "int8"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "alive_channel" in err and "--state float" in err
    assert not out.exists() and not out.with_suffix(".json").exists()
