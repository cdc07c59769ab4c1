"""The exported C header computes what PyTorch computes: same states, same predictions."""

from __future__ import annotations

import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from _cexport import (
    CFLAGS,
    SANITIZE,
    CResult,
    compile_driver,
    fire_masks,
    images,
    random_model,
    run_driver,
)
from torch import Tensor

from ncaflow.config import AdaptiveStepsConfig, ModelConfig
from ncaflow.export import (
    ExportError,
    ModelSpec,
    c_fire_masks,
    dequantized_model,
    export_c,
    model_spec,
    predict,
    seed_state,
)

FLOAT_TOL = 1e-4
# int8 weights (per-output-channel symmetric) vs float32 weights after the rollout, relative
# to the largest state value; measured ~0.3-1.5 % on these random-weight models.
INT8_REL_TOL = 0.05


@dataclass(frozen=True)
class Case:
    id: str
    task: str
    config: ModelConfig
    masks: bool = True  # share a fire-mask sequence; else fire rate 1 (every cell fires)
    n: int = 3
    size: int = 12
    steps: int = 10


def _m(**kw: object) -> ModelConfig:
    base: dict[str, object] = {"hidden_width": 24, "fire_rate": 0.5}
    base.update(kw)
    return ModelConfig(**base)  # type: ignore[arg-type]


CASES = [
    Case(
        "growing-zeros-sobel-alive",
        "growing",
        _m(output_channels=4, hidden_channels=8, alive_channel=3),
        n=1,
        size=16,
        steps=16,
    ),
    Case(
        "growing-circular-laplace",
        "growing",
        _m(
            output_channels=4,
            hidden_channels=4,
            perception="sobel_laplace",
            padding="circular",
            fire_rate=1.0,
        ),
        masks=False,
        n=1,
        size=10,
    ),
    Case(
        "selfclass-reflect-learned-alive",
        "selfclass",
        _m(
            input_channels=1,
            output_channels=10,
            hidden_channels=5,
            perception="learned",
            learned_filters=2,
            padding="reflect",
            alive_channel=0,
        ),
    ),
    Case(
        "classification-vote-replicate-learned5",
        "classification",
        _m(
            input_channels=3,
            output_channels=4,
            hidden_channels=4,
            perception="learned",
            learned_filters=1,
            kernel_size=5,
            padding="replicate",
            fire_rate=1.0,
        ),
        masks=False,
    ),
    Case(
        "classification-head-reflect",
        "classification",
        _m(input_channels=1, output_channels=0, hidden_channels=6, padding="reflect", head=5),
    ),
    Case(
        "segmentation-circular-laplace-alive",
        "segmentation",
        _m(
            input_channels=3,
            output_channels=1,
            hidden_channels=6,
            perception="sobel_laplace",
            padding="circular",
            alive_channel=0,
        ),
    ),
    Case(
        "segmentation-zeros-learned",
        "segmentation",
        _m(
            input_channels=3,
            output_channels=1,
            hidden_channels=4,
            perception="learned",
            padding="zeros",
            fire_rate=1.0,
        ),
        masks=False,
    ),
    Case(
        "classification-mlp-head",
        "classification",
        _m(input_channels=1, output_channels=0, hidden_channels=6, head=4, head_hidden=7),
    ),
    Case(
        "segmentation-step-channel",
        "segmentation",
        _m(input_channels=3, output_channels=1, hidden_channels=4, step_channel=8),
    ),
]


def _inputs(case: Case) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor | None]:
    """(images or None, seed state (B, C, H, W), fire masks (steps, B, 1, H, W) or None)."""
    s = case.size
    c_in = case.config.input_channels
    img = images(case.n, c_in, s, s, seed=1) if c_in else None
    masks = (
        fire_masks(case.steps, case.n, s, s, case.config.fire_rate, seed=2) if case.masks else None
    )
    model = random_model(case.config, seed=0)
    spec_seed = seed_state(model_spec(model, task=case.task), img, size=(s, s))
    return img, spec_seed, masks


def _run_case(
    case: Case,
    tmp_path: Path,
    *,
    int8: bool,
    flags: list[str] | None = None,
    wrapper: list[str] | None = None,
) -> tuple[ModelSpec, CResult, Tensor, Tensor | None]:
    model = random_model(case.config, seed=0)
    exported = export_c(model, tmp_path / "model.h", task=case.task, int8=int8)
    spec = exported.spec
    img, seed, masks = _inputs(case)
    exe = compile_driver(exported.path, tmp_path / "driver", flags=flags)
    c = run_driver(
        exe,
        spec,
        tmp=tmp_path,
        n=case.n,
        h=case.size,
        w=case.size,
        steps=case.steps,
        image=img,
        masks=masks,
        wrapper=wrapper,
    )
    with torch.no_grad():
        ref = model(seed, case.steps, fire_masks=masks)
        ref_q = dequantized_model(model)(seed, case.steps, fire_masks=masks) if int8 else None
    return spec, c, ref, ref_q


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_float_header_matches_pytorch(case: Case, tmp_path: Path) -> None:
    spec, c, ref, _ = _run_case(case, tmp_path, int8=False)
    assert (ref - ref[:, :1]).abs().max() > 0  # non-trivial dynamics
    diff = (c.states - ref).abs().max().item()
    assert diff < FLOAT_TOL, f"max abs diff {diff:.3g}"
    torch.testing.assert_close(
        c.states[:, : case.config.input_channels],
        ref[:, : case.config.input_channels],
        rtol=0,
        atol=0,
    )  # frozen
    expected = predict(spec, ref)
    if spec.readout == "rgba":
        torch.testing.assert_close(c.pred, expected, rtol=0, atol=FLOAT_TOL)
    else:
        assert torch.equal(c.pred, expected)
    if spec.readout == "mask":
        assert 0 < c.pred.float().mean() < 1  # a mask with both classes


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_int8_header(case: Case, tmp_path: Path) -> None:
    spec, c, ref, ref_q = _run_case(case, tmp_path, int8=True)
    assert ref_q is not None
    # the C int8 path computes exactly the dequantised PyTorch model
    assert (c.states - ref_q).abs().max().item() < FLOAT_TOL
    # and stays close to the float model, with the same predictions
    rel = ((c.states - ref).abs().max() / ref.abs().max()).item()
    assert rel < INT8_REL_TOL, f"int8 relative max abs diff {rel:.3g}"
    if spec.readout in ("vote", "head"):
        assert torch.equal(c.pred, predict(spec, ref))
    elif spec.readout == "mask":
        assert (c.pred == predict(spec, ref)).float().mean() > 0.97


def test_builtin_prng_matches_c_fire_masks(tmp_path: Path) -> None:
    case = CASES[0]
    model = random_model(case.config, seed=0)
    exported = export_c(model, tmp_path / "model.h", task="growing")
    exe = compile_driver(exported.path, tmp_path / "driver")
    s, steps = 14, 12
    c = run_driver(exe, exported.spec, tmp=tmp_path, n=1, h=s, w=s, steps=steps, rng_seed=7)
    masks = c_fire_masks(7, steps, s, s, case.config.fire_rate)
    assert 0.4 < masks.mean() < 0.6
    with torch.no_grad():
        ref = model(seed_state(exported.spec, size=(s, s)), steps, fire_masks=masks)
    assert (c.states - ref).abs().max().item() < FLOAT_TOL


def _sanitize_ok() -> bool:
    probe = subprocess.run(
        ["gcc", "-fsanitize=address,undefined", "-x", "c", "-", "-o", "/dev/null"],
        input="int main(void){return 0;}",
        capture_output=True,
        text=True,
    )
    return probe.returncode == 0


@pytest.mark.skipif(not _sanitize_ok(), reason="gcc cannot build with ASan/UBSan here")
@pytest.mark.parametrize("index", [0, 2, 4], ids=[CASES[i].id for i in (0, 2, 4)])
def test_sanitizers_find_nothing(index: int, tmp_path: Path) -> None:
    case = CASES[index]
    _, c, ref, _ = _run_case(case, tmp_path, int8=index == 2, flags=["-O1", *SANITIZE])
    assert c.states.shape == ref.shape


@pytest.mark.skipif(shutil.which("valgrind") is None, reason="valgrind not installed")
def test_valgrind_memcheck_clean(tmp_path: Path) -> None:
    case = Case("v", "selfclass", CASES[2].config, n=1, size=8, steps=3)
    wrapper = ["valgrind", "--tool=memcheck", "--error-exitcode=1", "--leak-check=full", "-q"]
    _, c, ref, _ = _run_case(case, tmp_path, int8=False, flags=["-O1", "-g"], wrapper=wrapper)
    assert (c.states - ref).abs().max().item() < FLOAT_TOL


def test_two_headers_in_one_program_also_as_cplusplus(tmp_path: Path) -> None:
    grow = random_model(CASES[0].config, seed=0)
    seg = random_model(CASES[5].config, seed=0)
    export_c(grow, tmp_path / "grow.h", task="growing", name="grow")
    export_c(seg, tmp_path / "seg.h", task="segmentation", name="seg", int8=True)
    src = tmp_path / "both.c"
    src.write_text(
        '#define GROW_IMPLEMENTATION\n#include "grow.h"\n'
        '#define SEG_IMPLEMENTATION\n#include "seg.h"\n'
        "int main(void) { return GROW_CHANNELS + SEG_CHANNELS > 0 ? 0 : 1; }\n"
    )
    for cmd in (["gcc", *CFLAGS], ["g++", "-x", "c++", "-std=c++11", *CFLAGS[1:]]):
        res = subprocess.run(
            [*cmd, "-c", str(src), "-o", str(tmp_path / "both.o")], capture_output=True, text=True
        )
        assert res.returncode == 0, res.stderr


def test_step_channel_code_only_in_its_headers(tmp_path: Path) -> None:
    """model.step_channel = 0 leaves the header without any of its code (as before it)."""
    for period in (0, 8):
        config = _m(input_channels=3, output_channels=1, hidden_channels=4, step_channel=period)
        text = export_c(
            random_model(config, seed=0), tmp_path / "m.h", task="segmentation"
        ).path.read_text()
        for piece in ("_set_step", "__step_w", "_STEP_CHANNEL", "__time"):
            assert (piece in text) == (period > 0), piece
    with pytest.raises(ExportError, match="step_channel: the compact state lacks it"):
        export_c(random_model(config, seed=0), tmp_path / "c.h", task="segmentation", state="int8")


@pytest.mark.parametrize("step_channel", [0, 16])
def test_adaptive_steps_in_c_stop_where_pytorch_stops(tmp_path: Path, step_channel: int) -> None:
    """model.adaptive_steps: <name>_run_adaptive takes the steps PyTorch takes, per image,
    with shared fire masks and with the header's own PRNG, and ends in the same states
    (also feeding model.step_channel's t / T)."""
    sys.path.insert(0, str(Path(__file__).parents[1] / "model"))
    from test_adaptive import halving_model

    rule = AdaptiveStepsConfig(tol=0.02, patience=2, min_steps=3)
    model = halving_model(
        fire_rate=0.5, rule=rule, inputs=3, pull=True, step_channel=step_channel
    ).eval()
    exported = export_c(model, tmp_path / "model.h", task="segmentation", steps=40)
    exe = compile_driver(exported.path, tmp_path / "driver")
    n, size, steps = 3, 6, 40
    img = images(n, 3, size, size, seed=1) * torch.tensor([0.5, 2.0, 8.0]).view(n, 1, 1, 1)
    seed = seed_state(exported.spec, img, size=(size, size))  # zeros beside the image
    shared = fire_masks(steps, n, size, size, 0.5, seed=2)
    for masks, rng_seed in ((shared, -1), (None, 7)):
        c = run_driver(
            exe, exported.spec, tmp=tmp_path, n=n, h=size, w=size, steps=steps,
            image=img, masks=masks, rng_seed=rng_seed,
        )  # fmt: skip
        taken_c = [int(v) for v in c.stdout.split()]
        outs, taken = [], []
        for b in range(n):  # the C run of each image draws its own masks
            m = masks[:, b : b + 1] if masks is not None else None
            if m is None:
                m = c_fire_masks(rng_seed + b, steps, size, size, 0.5)
            with torch.no_grad():
                outs.append(model(seed[b : b + 1], steps, fire_masks=m))
            taken.append(int(model.steps_taken[0]))  # type: ignore[index]
        assert taken_c == taken and len(set(taken)) > 1 and max(taken) < steps, taken
        torch.testing.assert_close(c.states, torch.cat(outs), rtol=0, atol=FLOAT_TOL)


def test_mlp_head_logits_in_c_equal_pytorch(tmp_path: Path) -> None:
    """model.head_hidden: the C head (hidden layer, ReLU, logits) gives PyTorch's logits."""
    case = next(c for c in CASES if c.id == "classification-mlp-head")
    model = random_model(case.config, seed=0)
    assert isinstance(model.head, torch.nn.Sequential)
    spec, c, ref, _ = _run_case(case, tmp_path, int8=False)
    with torch.no_grad():
        logits = model.head(ref[:, 1:].mean(dim=(2, 3)))  # (B, classes): the hidden mean
    assert c.scores is not None
    torch.testing.assert_close(c.scores, logits, rtol=1e-4, atol=1e-4)
    assert torch.equal(c.pred, logits.argmax(1)) and spec.head_w1 is not None


def test_adaptive_steps_refused_where_the_header_cannot_stop(tmp_path: Path) -> None:
    """The compact state and cascades have no <name>_run_adaptive: one clear error."""
    from ncaflow.config import CascadeConfig
    from ncaflow.model.cascade import Cascade

    config = _m(
        input_channels=3, output_channels=1, hidden_channels=4, adaptive_steps=AdaptiveStepsConfig()
    )
    with pytest.raises(ExportError, match="adaptive_steps: the compact state lacks it"):
        export_c(random_model(config, seed=0), tmp_path / "a.h", task="segmentation", state="int8")
    cascade = Cascade(model=config, cascade=CascadeConfig(scales=[2, 1], steps=[2, 2]))
    with pytest.raises(ExportError, match="adaptive_steps exports for a single-scale model"):
        export_c(cascade, tmp_path / "b.h", task="segmentation")
