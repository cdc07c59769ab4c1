"""The step written for a compiler (compiled and fused backends) equals the reference."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from helpers import assert_same_rollout

from ncaflow.backends import gemm, stencil
from ncaflow.backends.registry import BACKENDS
from ncaflow.config import ModelConfig
from ncaflow.model.nca import NCA


def randomised(cfg: ModelConfig, seed: int = 0) -> NCA:
    torch.manual_seed(seed)
    model = NCA(config=cfg)
    with torch.no_grad():
        model.fc2.weight.normal_(0, 0.1)  # non-zero so steps change the state
    return model


def test_channels_last_alive_mask_is_max_pool() -> None:
    """The compiled step's alive mask of two channels-last states is the reference's pair of
    masks, cell for cell (a non-square grid, so a transposed view would not pass), at the
    borders too, and each state's mask counts (either one dead kills the cell)."""
    before, after = torch.randn(3, 5, 6, 7), torch.randn(3, 5, 6, 7)
    before[0] = -1.0  # all dead: a border cell must not see padding as alive
    after[1] = -1.0
    after[2, 3] = -1.0  # alive only around one corner cell after the step
    after[2, 3, 0, 0] = 1.0
    pre, post = (
        stencil.alive_planes(before[:, 3:4], 0.1),
        stencil.alive_planes(after[:, 3:4], 0.1),
    )
    expected = pre & post
    cl = (t.permute(0, 2, 3, 1) for t in (before, after))
    got = gemm._alive_cl(*cl, 3, 0.1)
    assert expected.any() and not expected.all() and not expected[:2].any()
    assert (pre[2] != post[2]).any()  # cells where only one of the two is alive
    assert torch.equal(got.permute(0, 3, 1, 2), expected)


def test_rows_that_matter_are_the_cells_that_fire_near_life() -> None:
    """_rows_that_matter's separable maximum (1 x 5, then 5 x 1) is the 5 x 5 neighbourhood
    of cells above the threshold, the grid's edges included, times the fire mask; int32, the
    dtype the fused row ordering scans without a cast."""
    torch.manual_seed(3)
    alpha = torch.where(torch.rand(3, 1, 17, 13) < 0.04, 0.5, 0.05)
    alpha[0, 0, 0, 12] = alpha[1, 0, 16, 0] = 0.5  # live corners
    x = torch.cat([torch.rand(3, 3, 17, 13), alpha], 1)
    fire = (torch.rand(3, 1, 17, 13) < 0.5).float()
    near = (F.max_pool2d(alpha, 5, stride=1, padding=2) > 0.1).float()
    for f, expected in ((fire, fire * near), (None, near)):
        keep = gemm.rows_that_matter(x.permute(0, 2, 3, 1), f, (3, 0.1))
        assert keep is not None and keep.dtype == torch.int32
        assert torch.equal(keep, expected[:, 0].to(torch.int32))
    only_fire = gemm.rows_that_matter(x.permute(0, 2, 3, 1), fire, None)
    assert only_fire is not None and only_fire.dtype == torch.int32
    assert torch.equal(only_fire, fire[:, 0].to(torch.int32))
    assert 0 < int(near.sum()) < near.numel()


@pytest.mark.parametrize("fire_rate", [0.5, 1.0])
def test_rows_that_matter_are_the_only_ones_that_can(fire_rate: float) -> None:
    """The fused MLP skips cells outside _rows_that_matter: any update there, even one that
    crosses the alive threshold, leaves the step's result unchanged. The live region is a
    small blob in a larger grid, so there are dead cells at distance 1, 2 and beyond."""
    cfg = ModelConfig(output_channels=4, hidden_channels=4, hidden_width=16, alive_channel=3)
    nca = randomised(cfg)
    x = torch.zeros(2, cfg.channels, 12, 12)
    x[:, 3:, 5:7, 5:8] = torch.rand(2, cfg.channels - 3, 2, 3) + 0.2
    fire = (torch.rand(2, 1, 12, 12) < fire_rate).float() if fire_rate < 1 else None
    cl = x.permute(0, 2, 3, 1)
    keep = gemm.rows_that_matter(cl, fire, (3, 0.1))
    assert keep is not None
    keep = keep.unsqueeze(1)  # (B, 1, H, W)
    kept = int(keep.sum())
    assert 0 < kept < 0.5 * keep.numel()  # most cells are skipped here
    true_update = nca.update
    expected = nca.step_reference(x, fire)
    for garbage in (5.0, -5.0):  # alpha updates far beyond the threshold, both signs
        nca.update = lambda v, g=garbage: true_update(v) * keep + g * (1 - keep)  # type: ignore[method-assign]
        torch.testing.assert_close(nca.step_reference(x, fire), expected, rtol=0, atol=0)
    # ... while the ring beyond the alive neighbourhoods does matter: when the live cells'
    # alpha falls, a neighbour two cells away that comes alive keeps one of them alive
    near1 = stencil.alive_planes(x[:, 3:4], 0.1).float()
    results = []
    for outside in (-5.0, 5.0):
        nca.update = lambda v, o=outside: -5.0 * near1 + o * (1 - near1)  # type: ignore[method-assign]
        results.append(nca.step_reference(x, None))
    assert not torch.equal(*results)


@pytest.mark.parametrize("perception", ["sobel", "sobel_laplace", "learned"])
@pytest.mark.parametrize("padding", ["zeros", "circular", "reflect", "replicate"])
@pytest.mark.parametrize("inputs", [0, 2])
def test_step_gemm_equals_the_reference_step(perception: str, padding: str, inputs: int) -> None:
    """The compiler-friendly formulation (slices + GEMMs) is the same function, gradients too."""
    cfg = ModelConfig(
        input_channels=inputs,
        output_channels=3,
        hidden_channels=5,
        hidden_width=16,
        perception=perception,  # type: ignore[arg-type]
        padding=padding,  # type: ignore[arg-type]
        alive_channel=None if inputs else 3,
    )
    nca = randomised(cfg)
    x = torch.rand(2, cfg.channels, 7, 9, requires_grad=True)
    fire = (torch.rand(2, 1, 7, 9) < 0.5).float()
    a, b = nca.step_reference(x, fire), nca.step_gemm(x, fire)
    torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6)
    wrt = [x, *nca.parameters()]
    ga = torch.autograd.grad(a.square().sum(), wrt)
    gb = torch.autograd.grad(b.square().sum(), wrt)
    for u, v in zip(gb, ga, strict=True):
        torch.testing.assert_close(u, v, rtol=1e-4, atol=1e-5)


def test_compiled_rollout_equals_reference() -> None:
    """impl="compiled" (torch.compile of step_gemm) gives the reference rollout and gradients,
    with the same fire masks drawn from the same generator."""
    cfg = ModelConfig(output_channels=4, hidden_channels=8, hidden_width=32, alive_channel=3)
    ref = randomised(cfg)
    ref.backend = BACKENDS["reference"]
    comp = NCA(config=cfg, impl="compiled")
    comp.load_state_dict(ref.state_dict())
    x = torch.zeros(2, cfg.channels, 12, 12)
    x[:, 3:, 6, 6] = 1.0
    assert_same_rollout(ref, comp, x, 6, rtol=1e-5, atol=1e-6)


def test_each_structure_compiles_with_its_own_shapes(monkeypatch: pytest.MonkeyPatch) -> None:
    """A second model structure in one process compiles with its sizes as constants: no
    automatic-dynamic state carried over from the first (which made the grouped
    convolution's groups symbolic and broke Inductor's CUDA layout heuristic)."""
    import torch._dynamo

    graphs: list[torch.fx.GraphModule] = []

    def record(gm: torch.fx.GraphModule, example_inputs: list[torch.Tensor]):  # type: ignore[no-untyped-def]
        graphs.append(gm)
        return gm.forward

    plain_compile = torch.compile
    monkeypatch.setattr(
        torch, "compile", lambda fn, options=None, **kw: plain_compile(fn, backend=record, **kw)
    )
    gemm.gemm_step_compiled.cache_clear()
    torch._dynamo.reset()
    try:
        for inputs, perception in [(0, "sobel"), (1, "learned")]:
            cfg = ModelConfig(
                input_channels=inputs,
                output_channels=4,
                hidden_channels=8,
                hidden_width=16,
                perception=perception,  # type: ignore[arg-type]
                alive_channel=None if inputs else 3,
            )
            nca = randomised(cfg)
            nca.backend = BACKENDS["compiled"]
            with torch.no_grad():
                nca(torch.rand(2, cfg.channels, 6, 6), 2)
    finally:
        gemm.gemm_step_compiled.cache_clear()
        torch._dynamo.reset()
    convs = [n for n in graphs[-1].graph.nodes if n.target is F.conv2d]
    assert convs and all(type(n.kwargs["groups"]) is int for n in convs)
    placeholders = [n for n in graphs[-1].graph.nodes if n.op == "placeholder"]
    assert not [n for n in placeholders if isinstance(n.meta.get("example_value"), torch.SymInt)]


def test_compiled_step_survives_many_models_and_shapes() -> None:
    """Dynamo allows a code object only so many compiled graphs (recompile_limit, 8) and
    with fullgraph fails beyond it; a process that builds many models (a grid search, k-fold)
    or steps varying batch sizes must not run into it. With the limit patched down to 2,
    three model structures at three batch sizes each still compile and match the reference."""
    import torch._dynamo

    torch._dynamo.reset()
    with torch._dynamo.config.patch(recompile_limit=2):
        for width in (8, 9, 10):
            cfg = ModelConfig(output_channels=4, hidden_channels=4, hidden_width=width)
            nca = randomised(cfg)
            nca.backend = BACKENDS["compiled"]
            for batch in (1, 2, 3):
                x = torch.rand(batch, cfg.channels, 6, 6)
                torch.testing.assert_close(
                    nca.backend.step(nca, x, None),
                    nca.step_reference(x, None),
                    rtol=1e-5,
                    atol=1e-6,
                )
