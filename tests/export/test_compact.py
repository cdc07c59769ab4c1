"""The compact (int8, in-place) state header computes what its PyTorch reference computes."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from _cexport import DRIVER_COMPACT, compile_driver, fire_masks, images, random_model, run_driver
from test_c import CASES, Case, _m

from ncaflow.config import ModelConfig
from ncaflow.export import (
    ExportError,
    StateQuant,
    calibrate_state,
    compact_rollout,
    export_c,
    footprint,
    model_spec,
    predict,
    seed_state,
)

pytestmark = pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc")

# no FMA contraction: the same float operations in C and in the Cortex-M build
FLAGS = ["-O2", "-ffp-contract=off"]

COMPACT_CASES = [
    # the random growing model without alive masking explodes after a few steps
    *(
        replace(c, steps=3) if c.task == "growing" else c
        for c in CASES
        if c.config.alive_channel is None and not c.config.step_channel  # float state only
    ),
    Case(
        "segmentation-circular-learned5",
        "segmentation",
        _m(
            input_channels=3,
            output_channels=1,
            hidden_channels=4,
            perception="learned",
            learned_filters=2,
            kernel_size=5,
            padding="circular",
        ),
        size=11,
    ),
    Case(
        "selfclass-vote-reflect-noalive",
        "selfclass",
        _m(input_channels=1, output_channels=10, hidden_channels=5, padding="reflect"),
    ),
]


def _setup(case: Case) -> tuple[torch.nn.Module, torch.Tensor | None, torch.Tensor, torch.Tensor]:
    model = random_model(case.config, seed=0)
    spec = model_spec(model, task=case.task)
    s, c_in = case.size, case.config.input_channels
    img = images(case.n, c_in, s, s, seed=1) if c_in else None
    seed = seed_state(spec, img, size=(s, s))
    masks = fire_masks(case.steps, case.n, s, s, case.config.fire_rate, seed=2)
    return model, img, seed, masks


@pytest.mark.parametrize("case", COMPACT_CASES, ids=[c.id for c in COMPACT_CASES])
def test_compact_header_matches_its_pytorch_reference(case: Case, tmp_path: Path) -> None:
    model, img, seed, masks = _setup(case)
    exported = export_c(
        model,
        tmp_path / "model.h",
        task=case.task,
        state="int8",
        calibration=seed,
        steps=case.steps,
    )
    spec, quant = exported.spec, exported.quant
    assert quant is not None and exported.state == "int8"
    exe = compile_driver(exported.path, tmp_path / "driver", flags=FLAGS, driver=DRIVER_COMPACT)
    s = case.size
    c = run_driver(
        exe,
        spec,
        tmp=tmp_path,
        n=case.n,
        h=s,
        w=s,
        steps=case.steps,
        image=img,
        masks=masks,
        compact=True,
    )
    ref = compact_rollout(model, quant, seed, case.steps, masks)
    codes = quant.quantize(ref)
    off = (c.states.int() - codes).abs()
    # float sums in another order may put a value on the other side of a rounding boundary
    assert off.max() <= 2 and (off > 0).float().mean() < 0.01, f"codes off: {off.float().mean()}"
    assert quant.dequantize(c.states.int()).abs().sum() > 0  # non-trivial
    values = quant.dequantize(c.states.int())
    expected = predict(spec, ref)
    if spec.readout == "rgba":
        torch.testing.assert_close(c.pred, predict(spec, values), rtol=0, atol=1e-6)
    elif spec.readout == "mask":
        assert (c.pred == expected).float().mean() > 0.99
    else:
        assert torch.equal(c.pred, predict(spec, values))


def test_compact_codebook_keeps_zero_grey_levels_and_small_values() -> None:
    # channel 0: an image in [0, 1]; channel 1: an updated channel reaching |x| = 40
    q = StateQuant.calibrated(np.array([1.0, 40.0]), np.array([0.0, -40]), np.array([1.0, 40]), 1)
    assert (np.diff(q.table, axis=1) > 0).all()
    grey = torch.arange(256.0).view(1, 1, 256, 1) / 255
    x = torch.cat([grey, torch.zeros_like(grey)], 1)
    codes = q.quantize(x)
    assert codes[0, 0].unique().numel() == 256  # every 8-bit grey level has its own code
    back = q.dequantize(codes)
    assert (back[0, 0] - grey[0, 0]).abs().max() < 1e-6
    assert back[0, 1].abs().max() == 0  # zero is an exact code
    # fine near zero (a logit's sign, small updates), about 5 % far from it; ends saturate
    small = torch.tensor([0.0, 0.01, -0.01, 30.0, 1e6]).view(1, 1, 5, 1).expand(1, 2, 5, 1)
    got = q.round_trip(small)[0, 1, :, 0]
    assert got[1] > 0 > got[2] and abs(got[1] - 0.01) < 0.004  # step 40 / 5200 near 0
    assert abs(got[3] - 30.0) < 0.05 * 30 and got[4] == q.table[1, -1]


def test_c_codes_equal_the_python_codes(tmp_path: Path) -> None:
    """The C __quant (binary search over midpoints) and StateQuant.quantize agree exactly."""
    case = COMPACT_CASES[0]
    model, _, seed, masks = _setup(case)
    spec = model_spec(model, task=case.task)
    quant = calibrate_state(model, spec, seed, case.steps, masks)
    exported = export_c(
        model, tmp_path / "nca.h", task=case.task, state="int8", state_quant=quant, steps=1
    )
    c = spec.config.channels
    values = torch.linspace(-1.2, 1.2, 997) * float(np.abs(quant.table).max())
    prog = tmp_path / "codes.c"
    prog.write_text(
        '#define NCA_IMPLEMENTATION\n#include "nca.h"\n#include <stdio.h>\n'
        'int main(void) { float v; int c; while (scanf("%d %a", &c, &v) == 2) '
        'printf("%d\\n", nca__quant(v, c)); return 0; }\n'
    )
    exe = tmp_path / "codes"
    res = subprocess.run(
        ["gcc", *FLAGS, f"-I{exported.path.parent}", str(prog), "-o", str(exe)],
        capture_output=True,
        text=True,
    )
    assert res.returncode == 0, res.stderr
    lines = [f"{ch} {float(v).hex()}" for ch in range(c) for v in values]
    run = subprocess.run([str(exe)], input="\n".join(lines), capture_output=True, text=True)
    got = torch.tensor([int(t) for t in run.stdout.split()]).view(c, -1)
    want = quant.quantize(values.view(1, 1, -1, 1).expand(1, c, -1, 1).contiguous())[0, :, :, 0]
    assert torch.equal(got, want)


def test_compact_footprint_fits_64k_for_64x64_segmentation() -> None:
    cfg = ModelConfig(input_channels=3, output_channels=1, hidden_channels=8, hidden_width=64)
    model = random_model(cfg, seed=0)
    spec = model_spec(model, task="segmentation")
    fp = footprint(spec, height=64, width=64, steps=32, state="int8")
    assert fp.ram_state_bytes == 64 * 64 * 12
    assert fp.ram_scratch_bytes == 2 * 64 * 12  # the row ring of a 3x3 kernel
    assert fp.ram_total_bytes < 64 * 1024
    float_fp = footprint(spec, height=64, width=64, steps=32)
    assert float_fp.ram_state_bytes == 2 * 64 * 64 * 12 * 4


def test_compact_refuses_alive_masking_and_cascades_and_missing_scales(tmp_path: Path) -> None:
    alive = next(c for c in CASES if c.config.alive_channel is not None)
    model, _, seed, _ = _setup(alive)
    with pytest.raises(ExportError, match="alive"):
        export_c(model, tmp_path / "a.h", task=alive.task, state="int8", calibration=seed)
    ok = COMPACT_CASES[0]
    model = random_model(ok.config, seed=0)
    with pytest.raises(ExportError, match="calibration="):
        export_c(model, tmp_path / "b.h", task=ok.task, state="int8")
    with pytest.raises(ExportError, match="use one of"):
        export_c(model, tmp_path / "c.h", task=ok.task, state="fp8")
    assert not list(tmp_path.iterdir())


def test_calibrated_scales_cover_the_float_rollout() -> None:
    case = COMPACT_CASES[0]
    model, _, seed, masks = _setup(case)
    spec = model_spec(model, task=case.task)
    quant = calibrate_state(model, spec, seed, case.steps, masks)
    with torch.no_grad():
        ref = model(seed, case.steps, fire_masks=masks)
    codes = quant.quantize(ref)
    assert ((codes == 127) | (codes == -128)).float().mean() < 0.01  # hardly any saturation
