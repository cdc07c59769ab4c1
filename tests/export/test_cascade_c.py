"""A cascade exported to C computes what :class:`ncaflow.model.cascade.Cascade` computes."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from _cexport import compile_driver, images, run_driver
from torch import nn

from ncaflow.config import CascadeConfig, ModelConfig, RunConfig
from ncaflow.export import (
    ExportError,
    c_cascade_fire_masks,
    export_c,
    export_with_report,
    predict,
    seed_state,
)
from ncaflow.guard.io import load, save
from ncaflow.model.cascade import build_model

pytestmark = pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc")

FLOAT_TOL = 1e-4


def _cascade(task: str, model: dict, scales: list[int], steps: list[int], **kw) -> nn.Module:
    torch.manual_seed(0)
    config = RunConfig(
        task=task,
        model=ModelConfig(hidden_width=24, fire_rate=0.5, **model),
        cascade=CascadeConfig(scales=scales, steps=steps, **kw),
    )
    cascade = build_model(config)
    with torch.no_grad():  # random non-zero weights, so that every level does something
        for level in cascade.levels:
            nn.init.normal_(level.fc2.weight, std=0.1)
            nn.init.normal_(level.fc1.bias, std=0.1)
        if hasattr(cascade, "head"):
            nn.init.normal_(cascade.head.bias, std=0.3)
    cascade.run_config = config
    return cascade.eval()


CASES = {
    "segmentation-4-2-1": (
        "segmentation",
        {"input_channels": 3, "output_channels": 1, "hidden_channels": 6},
        [4, 2, 1],
        [3, 4, 5],
        {},
    ),
    "classification-head-shared": (
        "classification",
        {"input_channels": 1, "output_channels": 2, "hidden_channels": 6, "head": 3},
        [2, 1],
        [4, 4],
        {"shared": True},
    ),
    "growing-alive-2-1": (
        "growing",
        {"output_channels": 4, "hidden_channels": 4, "alive_channel": 3},
        [2, 1],
        [6, 6],
        {},
    ),
}


@pytest.mark.parametrize("case", CASES)
def test_cascade_header_equals_pytorch(tmp_path: Path, case: str) -> None:
    task, model_kw, scales, steps, kw = CASES[case]
    model = _cascade(task, model_kw, scales, steps, **kw)
    result = export_c(model, tmp_path / "cascade.h")
    assert len(result.levels) == (1 if kw.get("shared") else len(scales))
    exe = compile_driver(result.path, tmp_path / "driver")
    n, size = (1 if task == "growing" else 2), 16
    c_in = model.config.input_channels
    x = images(n, c_in, size, size, seed=1) if c_in else None
    seed = seed_state(result.spec, x, size=(size, size))

    # the header's own PRNG: the same masks drawn in PyTorch, item by item
    got = run_driver(
        exe, result.spec, tmp=tmp_path, n=n, h=size, w=size, steps=sum(steps), image=x, rng_seed=7
    )
    for b in range(n):
        masks = c_cascade_fire_masks(7 + b, scales, steps, size, size, model.config.fire_rate)
        with torch.no_grad():
            want = model(seed[b : b + 1], fire_masks=masks)
        torch.testing.assert_close(got.states[b : b + 1], want, rtol=FLOAT_TOL, atol=FLOAT_TOL)
        assert torch.equal(got.pred[b : b + 1], predict(result.spec, want))

    # every cell fires (no rng, no masks)
    got = run_driver(exe, result.spec, tmp=tmp_path, n=n, h=size, w=size, steps=1, image=x)
    ones = [torch.ones(k, n, 1, size // s, size // s) for s, k in zip(scales, steps, strict=True)]
    with torch.no_grad():
        want = model(seed, fire_masks=ones)
    torch.testing.assert_close(got.states, want, rtol=FLOAT_TOL, atol=FLOAT_TOL)


def test_saved_cascade_exports_with_report(tmp_path: Path) -> None:
    """`ncaflow export c` on a saved cascade: header, footprint of every level, int8 check."""
    task, model_kw, scales, steps, kw = CASES["segmentation-4-2-1"]
    model = _cascade(task, model_kw, scales, steps, **kw)
    save(model, model.run_config, tmp_path / "m" / "model.safetensors", meta={"size": 16})
    report, summary = export_with_report(tmp_path / "m", tmp_path / "seg.h", int8=True)
    fp = report["footprint"]
    assert fp["steps"] == sum(steps) and (fp["height"], fp["width"]) == (16, 16)
    per_level = fp["macs_per_cell"] * 16 * 16
    assert fp["macs_per_inference"] == sum(
        per_level // s**2 * k for s, k in zip(scales, steps, strict=True)
    )
    assert 0.5 <= report["int8_vs_float"]["agreement"] <= 1.0
    assert "readout mask" in summary
    exe = compile_driver(tmp_path / "seg.h", tmp_path / "driver")  # the int8 header compiles
    assert exe.exists()
    assert load(tmp_path / "m").levels[0].fc1.weight.shape[0] == 24


def test_sizes_that_do_not_nest_are_refused(tmp_path: Path) -> None:
    model = _cascade("segmentation", CASES["segmentation-4-2-1"][1], [3, 2, 1], [2, 2, 2])
    with pytest.raises(ExportError, match="multiple of the next"):
        export_c(model, tmp_path / "bad.h")
    assert not (tmp_path / "bad.h").exists()


def test_run_refuses_a_grid_the_coarsest_scale_does_not_divide(tmp_path: Path) -> None:
    """nca_run returns NULL for a 14x14 grid when the coarsest scale is 4, as documented."""
    model = _cascade(*CASES["segmentation-4-2-1"][:4])
    result = export_c(model, tmp_path / "c.h")
    probe = tmp_path / "probe.c"
    probe.write_text(
        '#define NCA_IMPLEMENTATION\n#include "c.h"\n#include <stdlib.h>\n'
        "int main(void) {\n"
        "    float *a = calloc(NCA_STATE_FLOATS(14, 14), 4);\n"
        "    float *b = calloc(NCA_STATE_FLOATS(14, 14), 4);\n"
        "    unsigned char *s = malloc(NCA_SCRATCH_BYTES(14, 14));\n"
        "    return nca_run(a, b, 14, 14, 0, 0, 0, s) == 0 ? 0 : 1;\n}\n"
    )
    exe = tmp_path / "probe"
    cmd = [
        "gcc",
        "-std=c99",
        "-Wall",
        "-Wextra",
        "-Werror",
        f"-I{tmp_path}",
        str(probe),
        "-o",
        str(exe),
    ]
    assert subprocess.run(cmd, capture_output=True).returncode == 0
    assert subprocess.run([str(exe)]).returncode == 0
    assert result.steps == 12


def test_shipped_cascade_config_trains_and_exports(tmp_path: Path, mirror: Path) -> None:
    """config/runs/kvasir-cascade.yaml: a few iterations on the Kvasir mirror, then
    `ncaflow export c`, and the header compiles with the test driver."""
    from ncaflow.cli import main

    repo = Path(__file__).resolve().parents[2]
    out = tmp_path / "run"
    sets = [
        "train.iterations=2",
        "train.batch_size=2",
        "train.eval_every=2",
        "train.checkpoint_every=2",
        "train.progress=false",
        "train.device=cpu",
        "data.size=32",
        "cascade.steps=[2, 2, 2]",
        f"data.mirror={mirror}",
        f"data.root={tmp_path / 'raw'}",
    ]
    argv = ["train", "--config", str(repo / "config/runs/kvasir-cascade.yaml"), "--out", str(out)]
    assert main([*argv, *(a for s in sets for a in ("--set", s))]) == 0
    assert type(load(out)).__name__ == "Cascade"
    assert main(["export", "c", str(out), "--out", str(tmp_path / "kvasir.h")]) == 0
    compile_driver(tmp_path / "kvasir.h", tmp_path / "driver")
