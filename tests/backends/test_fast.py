"""The fast rollout (ncaflow.backends.fast) equals the reference formulation, in both passes."""

from __future__ import annotations

import copy
import itertools
import shutil
from pathlib import Path

import pytest
import torch

from ncaflow.backends.registry import BACKENDS
from ncaflow.config import ModelConfig
from ncaflow.model.nca import NCA

PADDINGS = ["zeros", "reflect", "replicate", "circular"]
PERCEPTIONS = [("sobel", 3), ("sobel_laplace", 3), ("learned", 3), ("learned", 5)]


def _pair(config: ModelConfig, dtype: torch.dtype = torch.float64) -> tuple[NCA, NCA]:
    torch.manual_seed(0)
    fast = NCA(config=config, impl="fast").to(dtype)
    with torch.no_grad():  # the zero-initialised output layer would hide every difference
        fast.fc2.weight.normal_(0.0, 0.3)
        fast.fc1.bias.normal_(0.0, 0.3)
    ref = copy.deepcopy(fast)
    ref.backend = BACKENDS["reference"]
    return fast, ref


def _seed(
    config: ModelConfig, dtype: torch.dtype = torch.float64, b: int = 2, hw: int = 11
) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    x = torch.rand(b, config.channels, hw, hw + 2, generator=g, dtype=dtype)
    return x * (torch.rand(b, 1, hw, hw + 2, generator=g, dtype=dtype) < 0.6)


def _rollout(
    model: NCA, x: torch.Tensor, steps: int = 5, **kwargs: object
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    x = x.clone().requires_grad_(True)
    gen = torch.Generator().manual_seed(7)
    y = model(x, steps, generator=gen, **kwargs)
    weights = torch.linspace(-1.0, 1.0, y.numel(), dtype=y.dtype).view_as(y)
    loss = (y * weights).sum() + (y[:, -1] ** 2).sum()
    grads = torch.autograd.grad(loss, [x, *model.parameters()])
    return y.detach(), list(grads)


def _assert_same(
    a: tuple[torch.Tensor, list[torch.Tensor]],
    b: tuple[torch.Tensor, list[torch.Tensor]],
    tol: float,
) -> None:
    torch.testing.assert_close(a[0], b[0], rtol=tol, atol=tol)
    assert len(a[1]) == len(b[1])
    for ga, gb in zip(a[1], b[1], strict=True):
        torch.testing.assert_close(ga, gb, rtol=tol, atol=tol)


@pytest.mark.parametrize(("padding", "perception"), list(itertools.product(PADDINGS, PERCEPTIONS)))
@pytest.mark.parametrize(
    ("input_channels", "alive_channel", "fire_rate"), [(0, 3, 0.5), (2, None, 1.0), (2, 0, 0.5)]
)
def test_fast_equals_reference(
    padding: str,
    perception: tuple[str, int],
    input_channels: int,
    alive_channel: int | None,
    fire_rate: float,
) -> None:
    kind, k = perception
    cfg = ModelConfig(
        input_channels=input_channels,
        output_channels=3,
        hidden_channels=4,
        hidden_width=16,
        perception=kind,  # type: ignore[arg-type]
        kernel_size=k,
        padding=padding,  # type: ignore[arg-type]
        fire_rate=fire_rate,
        alive_channel=alive_channel,
        alive_threshold=0.3,
    )
    fast, ref = _pair(cfg)
    x = _seed(cfg)
    _assert_same(_rollout(fast, x), _rollout(ref, x), 1e-9)


@pytest.mark.parametrize("checkpoint_every", [0, 1, 3])
def test_memory_saving_path_same_gradients(checkpoint_every: int) -> None:
    cfg = ModelConfig(
        output_channels=4, hidden_channels=4, hidden_width=16, alive_channel=3, alive_threshold=0.2
    )
    fast, ref = _pair(cfg)
    x = _seed(cfg)
    expected = _rollout(ref, x, steps=7)
    _assert_same(_rollout(fast, x, steps=7, checkpoint_every=checkpoint_every), expected, 1e-9)


def test_float32_close_and_given_masks() -> None:
    cfg = ModelConfig(
        input_channels=1, output_channels=3, hidden_channels=4, hidden_width=32, alive_channel=None
    )
    fast, ref = _pair(cfg, torch.float32)
    x = _seed(cfg, torch.float32, b=3, hw=16)
    masks = (torch.rand(6, 3, 1, 16, 18, generator=torch.Generator().manual_seed(3)) < 0.5).float()
    _assert_same(
        _rollout(fast, x, 6, fire_masks=masks), _rollout(ref, x, 6, fire_masks=masks), 1e-4
    )


def test_inference_deterministic_and_callback() -> None:
    cfg = ModelConfig(
        output_channels=4, hidden_channels=4, hidden_width=16, alive_channel=3, alive_threshold=0.2
    )
    fast, ref = _pair(cfg)
    x = _seed(cfg)
    seen: dict[str, list[torch.Tensor]] = {"fast": [], "reference": []}
    outs = []
    for model in (fast, fast, ref):
        frames = seen[model.impl]
        frames.clear()
        with torch.no_grad():
            gen = torch.Generator().manual_seed(5)
            outs.append(
                model(x, 4, generator=gen, callback=lambda t, s, f=frames: f.append(s.clone()))
            )
    assert torch.equal(outs[0], outs[1])  # same generator seed, same result
    torch.testing.assert_close(outs[0], outs[2], rtol=1e-9, atol=1e-9)
    assert len(seen["fast"]) == len(seen["reference"]) == 4
    for a, b in zip(seen["fast"], seen["reference"], strict=True):
        assert a.shape == b.shape and a.is_contiguous()
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)
    # the generator is left in the same state by both paths
    g_fast, g_ref = torch.Generator().manual_seed(9), torch.Generator().manual_seed(9)
    with torch.no_grad():
        fast(x, 3, generator=g_fast)
        ref(x, 3, generator=g_ref)
    assert torch.equal(g_fast.get_state(), g_ref.get_state())


def test_frozen_weights_and_state_dict_unchanged() -> None:
    cfg = ModelConfig(perception="learned", learned_filters=2, hidden_width=16)
    fast, ref = _pair(cfg)
    assert list(fast.state_dict()) == ["filters", "fc1.weight", "fc1.bias", "fc2.weight"]
    for p in fast.parameters():
        p.requires_grad_(False)
    x = _seed(cfg).requires_grad_(True)
    y = fast(x, 3, generator=torch.Generator().manual_seed(2))
    (g,) = torch.autograd.grad(y.sum(), [x])
    for p in ref.parameters():
        p.requires_grad_(False)
    y_ref = ref(x, 3, generator=torch.Generator().manual_seed(2))
    (g_ref,) = torch.autograd.grad(y_ref.sum(), [x])
    torch.testing.assert_close(g, g_ref, rtol=1e-9, atol=1e-9)


def test_bad_impl() -> None:
    with pytest.raises(ValueError, match="impl"):
        NCA(config=ModelConfig(), impl="slow")  # type: ignore[arg-type]


def test_tiled_and_dense_rows(monkeypatch: pytest.MonkeyPatch) -> None:
    """Several GEMM tiles (and the dense path, when nearly every cell fires) agree too."""
    from ncaflow.backends import fast as fast_module

    monkeypatch.setattr(fast_module, "TILE_ROWS", 64)
    for rate, alive in [(0.5, 3), (0.97, None), (1.0, None)]:
        cfg = ModelConfig(
            output_channels=4,
            hidden_channels=4,
            hidden_width=16,
            fire_rate=rate,
            alive_channel=alive,
        )
        fast, ref = _pair(cfg)
        x = _seed(cfg, hw=17)
        _assert_same(_rollout(fast, x, steps=4), _rollout(ref, x, steps=4), 1e-9)


@pytest.mark.skipif(
    not any(shutil.which(c) for c in ("c++", "g++", "clang++")), reason="no C++ compiler"
)
def test_compiled_perception_equals_reference(monkeypatch: pytest.MonkeyPatch) -> None:
    """NCAFLOW_COMPILE=1: torch.compile'd perception and adjoint (one shape, about 20 s)."""
    monkeypatch.setenv("NCAFLOW_COMPILE", "1")
    cfg = ModelConfig(
        output_channels=3,
        hidden_channels=4,
        hidden_width=16,
        perception="sobel_laplace",
        padding="circular",
        alive_channel=3,
        alive_threshold=0.3,
    )
    fast, ref = _pair(cfg)
    x = _seed(cfg)
    _assert_same(_rollout(fast, x), _rollout(ref, x), 1e-9)
    workspace = BACKENDS["fast"].workspace(fast, x.permute(0, 2, 3, 1))  # type: ignore[attr-defined]
    assert workspace.compiled  # it did not fall back


def _main_job_cells_a_step() -> dict[str, int]:
    """task -> batch x grid cells of each training step of the main job (config/config.yaml
    with each task's `set` over its run config; the grid as the task reports it)."""
    import json

    import yaml

    import ncaflow
    from ncaflow.tasks import get_task

    root = Path(__file__).resolve().parents[2]
    cells = {}
    for name, task in yaml.safe_load((root / "config/config.yaml").read_text())["tasks"].items():
        sets = [f"{k}={json.dumps(v)}" for k, v in (task.get("set") or {}).items()]
        config = ncaflow.load_config(root / task["run"], sets)
        h, w = get_task(config.task).grid_size(config.data, {})
        cells[name] = config.train.batch_size * h * w
    return cells


def test_auto_compiles_the_perception_from_training_sized_grids(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """NCAFLOW_COMPILE=auto (the default; the workflow tests run with 0) compiles on a CPU
    with a C++ compiler from COMPILE_MIN_CELLS cells a step, never on a GPU; 0 never."""
    from ncaflow.backends import fast

    model = NCA(config=ModelConfig(output_channels=3, hidden_channels=4, hidden_width=16))
    ws_plan = model._make_plan()  # sobel: fixed taps, which is what compiles
    monkeypatch.setattr(fast.shutil, "which", lambda name: f"/usr/bin/{name}")
    monkeypatch.setenv("NCAFLOW_COMPILE", "auto")
    want = fast._want_compile
    assert want(ws_plan, fast.COMPILE_MIN_CELLS, cpu=True)
    assert not want(ws_plan, fast.COMPILE_MIN_CELLS - 1, cpu=True)
    assert not want(ws_plan, fast.COMPILE_MIN_CELLS, cpu=False)
    cells = _main_job_cells_a_step()
    assert len(cells) == 4 and all(want(ws_plan, n, cpu=True) for n in cells.values()), cells
    from ncaflow.runtime.reproducible import ENVIRONMENT

    with monkeypatch.context() as m:  # a reproducible run's variables keep perception eager
        for key, value in ENVIRONMENT.items():
            m.setenv(key, value)
        assert not want(ws_plan, max(cells.values()), cpu=True)
    monkeypatch.setenv("NCAFLOW_COMPILE", "0")
    assert not want(ws_plan, fast.COMPILE_MIN_CELLS, cpu=True)
    monkeypatch.setenv("NCAFLOW_COMPILE", "auto")
    monkeypatch.setattr(fast.shutil, "which", lambda name: None)
    assert not want(ws_plan, fast.COMPILE_MIN_CELLS, cpu=True)  # no compiler: eager
