"""Exported headers cross-compiled for a Cortex-M4/M7 and run under QEMU (MPS2 boards) print
exactly what the same program built for the host prints; the measurements make sense.

The Debian packages (ncaflow.export.cortexm.PACKAGES) are installed with apt-get when
missing; the tests skip where that cannot be done (no apt-get, not root) and fail under CI.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from _cexport import images, random_model
from test_compact import COMPACT_CASES

from ncaflow.export import (
    c_fire_masks,
    compact_rollout,
    cortexm,
    export_c,
    model_spec,
    predict,
    seed_state,
)

SIZE, STEPS, SEED = 12, 4, 1


def _install() -> str | None:
    """None when the tools are there (after installing them if need be), else why not."""
    if not cortexm.missing_tools():
        return None
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        return f"{', '.join(cortexm.missing_tools())} missing and no apt-get as root to install"
    apt = ["apt-get", "-y", "-q", "-o", "Dpkg::Use-Pty=0"]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = [*apt, "install", "--no-install-recommends", *cortexm.PACKAGES]
    if subprocess.run(install, env=env, capture_output=True).returncode != 0:
        subprocess.run([*apt, "update"], env=env, capture_output=True)
        res = subprocess.run(install, env=env, capture_output=True, text=True)
        if res.returncode != 0:
            return f"apt-get install {' '.join(cortexm.PACKAGES)} failed: {res.stderr[-500:]}"
    missing = cortexm.missing_tools()
    return f"{', '.join(missing)} still missing after apt-get install" if missing else None


@pytest.fixture(scope="session")
def arm_tools() -> None:
    why = _install()
    if why is not None:
        if os.environ.get("CI", "").strip().lower() not in ("", "0", "false"):
            pytest.fail(f"CI needs the Cortex-M toolchain: {why}", pytrace=False)
        pytest.skip(why)


def _case(case_id: str):  # type: ignore[no-untyped-def]
    case = next(c for c in COMPACT_CASES if c.id == case_id)
    model = random_model(case.config, seed=0)
    spec = model_spec(model, task=case.task)
    c_in = case.config.input_channels
    img = images(1, c_in, SIZE, SIZE, seed=1)
    return case, model, spec, img


def _both(header: Path, tmp: Path, img: torch.Tensor, board: str = "m4"):  # type: ignore[no-untyped-def]
    image = img[0].permute(1, 2, 0).numpy()
    fw = cortexm.build(
        header, tmp / "fw", image=image, h=SIZE, w=SIZE, steps=STEPS, seed=SEED, board=board
    )
    host = cortexm.build_host(
        header, tmp / "host", image=image, h=SIZE, w=SIZE, steps=STEPS, seed=SEED
    )
    return fw, cortexm.run_qemu(fw, timeout=120), cortexm.run_host(host, timeout=60)


def test_float_state_on_cortex_m4_equals_host_and_pytorch(arm_tools: None, tmp_path: Path) -> None:
    case, model, spec, img = _case("segmentation-circular-learned5")
    exported = export_c(model, tmp_path / "nca.h", task=case.task, steps=STEPS)
    fw, mcu, host = _both(exported.path, tmp_path, img)
    assert mcu.blocks == host.blocks  # byte for byte: state and mask
    c = spec.config.channels
    states = np.frombuffer(mcu.blocks["state"], np.float32).reshape(1, SIZE, SIZE, c)
    masks = c_fire_masks(SEED, STEPS, SIZE, SIZE, spec.config.fire_rate)
    with torch.no_grad():
        ref = model(seed_state(spec, img), STEPS, fire_masks=masks)
    got = torch.from_numpy(states.copy()).permute(0, 3, 1, 2)
    assert (got - ref).abs().max().item() < 1e-4
    mask = np.frombuffer(mcu.blocks["pred"], np.uint8).reshape(SIZE, SIZE) > 0
    assert np.array_equal(mask, predict(spec, ref)[0].numpy())
    # the measurements: 2,000,000 spin instructions over the 25 MHz timer under icount
    assert mcu.instructions_per_tick == pytest.approx(40.0, rel=1e-3)
    assert len(mcu.step_ticks) == STEPS
    macs = spec.config.channels * spec.n_filters * (spec.kernel_size**2 + spec.config.hidden_width)
    assert mcu.instructions_per_step > SIZE * SIZE * macs  # at least one instruction per MAC
    assert 0 < mcu.stack_bytes < 4096
    assert fw.bss_bytes >= 2 * SIZE * SIZE * c * 4  # the two float states


@pytest.mark.parametrize(
    ("case_id", "board"),
    [("segmentation-circular-learned5", "m4"), ("classification-head-reflect", "m7")],
)
def test_int8_state_on_cortex_m_equals_host_and_its_reference(
    arm_tools: None, tmp_path: Path, case_id: str, board: str
) -> None:
    case, model, spec, img = _case(case_id)
    seed = seed_state(spec, img)
    float_h = export_c(model, tmp_path / "f.h", task=case.task, steps=STEPS)
    exported = export_c(
        model, tmp_path / "nca.h", task=case.task, state="int8", calibration=seed, steps=STEPS
    )
    assert exported.quant is not None
    fw, mcu, host = _both(exported.path, tmp_path / "int8", img, board)
    assert mcu.blocks == host.blocks
    c = spec.config.channels
    codes = torch.from_numpy(
        np.frombuffer(mcu.blocks["state"], np.int8).reshape(1, SIZE, SIZE, c).copy()
    ).permute(0, 3, 1, 2)
    masks = c_fire_masks(SEED, STEPS, SIZE, SIZE, spec.config.fire_rate)
    ref = compact_rollout(model, exported.quant, seed, STEPS, masks)
    off = (codes.int() - exported.quant.quantize(ref)).abs()
    assert (off > 0).float().mean() < 0.01
    if spec.readout == "mask":
        mask = np.frombuffer(mcu.blocks["pred"], np.uint8).reshape(SIZE, SIZE) > 0
        assert (torch.from_numpy(mask) == predict(spec, ref)[0]).float().mean() > 0.99
    else:
        assert int.from_bytes(mcu.blocks["pred"], "big") == int(predict(spec, ref)[0])
    # one int8 state and a few rows instead of two float32 states
    fw_float = cortexm.build(
        float_h.path,
        tmp_path / "fwf",
        image=img[0].permute(1, 2, 0).numpy(),
        h=SIZE,
        w=SIZE,
        steps=STEPS,
        seed=SEED,
        board=board,
    )
    assert fw.bss_bytes < fw_float.bss_bytes / 3
