"""The automaton itself: shapes, padding, zero init, fire rate, alive mask, frozen inputs."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from helpers import assert_same_rollout

from ncaflow.backends import gemm
from ncaflow.backends.registry import BACKENDS
from ncaflow.config import ModelConfig
from ncaflow.model import perception
from ncaflow.model.nca import NCA
from ncaflow.model.perception import check_perception, fixed_filters, perceive


def randomised(cfg: ModelConfig, seed: int = 0) -> NCA:
    torch.manual_seed(seed)
    model = NCA(config=cfg)
    with torch.no_grad():
        model.fc2.weight.normal_(0, 0.1)  # non-zero so steps change the state
    return model


@pytest.mark.parametrize("perception", ["sobel", "sobel_laplace", "learned"])
@pytest.mark.parametrize("padding", ["zeros", "reflect", "replicate", "circular"])
def test_shapes_all_perceptions_and_paddings(perception: str, padding: str) -> None:
    cfg = ModelConfig(
        input_channels=2,
        output_channels=3,
        hidden_channels=5,
        perception=perception,
        padding=padding,
        kernel_size=5 if perception == "learned" else 3,
    )
    model = randomised(cfg)
    x = torch.rand(2, cfg.channels, 9, 11)
    y = model(x, 3, generator=torch.Generator().manual_seed(0))
    assert y.shape == x.shape
    k = 1 + cfg.learned_filters if perception == "learned" else 3 + (perception == "sobel_laplace")
    assert model.kernels().shape[0] == cfg.channels * k


def test_fixed_filters_are_identity_and_sobel() -> None:
    bank = fixed_filters(laplace=True)
    assert bank.shape == (4, 3, 3)
    x = torch.arange(25.0).view(1, 1, 5, 5)  # value = 5*row + col: d/dx = 1, d/dy = 5
    p = perceive(x, bank.unsqueeze(1), "replicate")
    assert torch.equal(p[0, 0], x[0, 0])
    assert torch.allclose(p[0, 1, 1:-1, 1:-1], torch.full((3, 3), 1.0))
    assert torch.allclose(p[0, 2, 1:-1, 1:-1], torch.full((3, 3), 5.0))
    assert torch.allclose(p[0, 3, 1:-1, 1:-1], torch.zeros(3, 3))  # linear ramp: no curvature


@pytest.mark.parametrize("perception", ["sobel", "learned"])
def test_padding_mode_is_honoured(perception: str) -> None:
    x = torch.rand(1, 4, 6, 6)
    outs = {}
    for padding in ["zeros", "reflect", "replicate", "circular"]:
        cfg = ModelConfig(
            output_channels=4, hidden_channels=0, perception=perception, padding=padding
        )
        outs[padding] = randomised(cfg).update(x)
    for a in outs:
        for b in outs:
            if a < b:
                assert not torch.allclose(outs[a][..., 0, :], outs[b][..., 0, :]), (a, b)
                assert torch.allclose(outs[a][..., 2:-2, 2:-2], outs[b][..., 2:-2, 2:-2], atol=1e-6)


def test_circular_padding_wraps() -> None:
    cfg = ModelConfig(output_channels=2, hidden_channels=2, padding="circular", fire_rate=1.0)
    model = randomised(cfg)
    x = torch.rand(1, 4, 8, 8)
    shifted = torch.roll(x, shifts=(3, 5), dims=(2, 3))
    assert torch.allclose(
        torch.roll(model.step(x, None), (3, 5), (2, 3)), model.step(shifted, None), atol=1e-6
    )


def test_zero_init_first_step_leaves_state_unchanged() -> None:
    model = NCA(config=ModelConfig(hidden_channels=8))
    x = torch.rand(2, model.config.channels, 8, 8)
    assert torch.equal(model(x, 1, generator=torch.Generator().manual_seed(0)), x)


def test_fire_rate_statistics() -> None:
    cfg = ModelConfig(output_channels=1, hidden_channels=0, fire_rate=0.3)
    model = NCA(config=cfg)
    masks = torch.stack(
        [
            model.fire_mask(torch.zeros(4, 1, 32, 32), torch.Generator().manual_seed(i))
            for i in range(10)
        ]
    )
    assert abs(masks.mean().item() - 0.3) < 0.01
    model = randomised(cfg)
    x = torch.rand(4, 1, 32, 32)
    dx = model.update(x)
    fired = (model.step(x, model.fire_mask(x, torch.Generator().manual_seed(1))) != x).float()
    assert abs(fired[dx != 0].mean().item() - 0.3) < 0.03
    assert model.fire_mask(x, None) is not None
    assert NCA(config=dataclasses.replace(cfg, fire_rate=1.0)).fire_mask(x, None) is None


def test_alive_masking() -> None:
    cfg = ModelConfig(output_channels=4, hidden_channels=4, alive_channel=3, fire_rate=1.0)
    model = randomised(cfg)
    with torch.no_grad():
        model.fc2.weight.abs_()  # always grow alpha
    x = torch.zeros(1, 8, 16, 16)
    x[0, 3:, 8, 8] = 1.0
    y = model(x, 1)
    live = (y.abs().sum(1) > 0)[0]
    assert live[7:10, 7:10].all() and not live[:6].any() and not live[:, :6].any()
    weak = x.clone()
    weak[0, 3, 8, 8] = 0.05  # below the threshold: the cell and its neighbours die
    assert torch.equal(model(weak, 1), torch.zeros_like(x))


def test_frozen_input_channels_never_change() -> None:
    cfg = ModelConfig(input_channels=3, output_channels=2, hidden_channels=3, alive_channel=0)
    model = randomised(cfg)
    x = torch.rand(2, 8, 10, 10)
    y = model(x, 10, generator=torch.Generator().manual_seed(0))
    assert torch.equal(y[:, :3], x[:, :3])
    assert not torch.equal(y[:, 3:], x[:, 3:])


def test_rollout_is_deterministic_for_a_seed() -> None:
    model = randomised(ModelConfig(hidden_channels=4, alive_channel=3))
    x = torch.rand(2, 8, 12, 12)
    a = model(x, 8, generator=torch.Generator().manual_seed(7))
    b = model(x, 8, generator=torch.Generator().manual_seed(7))
    c = model(x, 8, generator=torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_fire_masks_given_explicitly() -> None:
    model = randomised(ModelConfig(hidden_channels=4))
    x = torch.rand(2, 8, 6, 6)
    masks = (torch.rand(3, 2, 1, 6, 6) < 0.5).float()
    manual = x
    for m in masks:
        manual = model.step(manual, m)
    assert torch.allclose(model(x, 3, fire_masks=masks), manual)


def test_gradient_checkpointing_gives_same_gradients() -> None:
    model = randomised(ModelConfig(hidden_channels=4, alive_channel=3))
    x = torch.rand(2, 8, 10, 10)
    grads = []
    for chunk in (0, 3):
        model.zero_grad()
        model(
            x, 7, generator=torch.Generator().manual_seed(3), checkpoint_every=chunk
        ).square().mean().backward()
        grads.append([p.grad.clone() for p in model.parameters()])
    for a, b in zip(*grads, strict=True):
        assert torch.allclose(a, b, atol=1e-6)


@pytest.mark.parametrize("padding", ["zeros", "circular", "reflect", "replicate"])
@pytest.mark.parametrize("radius", [1, 2])
def test_pad_edges_is_f_pad(padding: str, radius: int) -> None:
    """The compiled step's padding (slices and concatenations) is F.pad's, for 3x3 and 5x5
    filters, channels-first and channels-last."""
    x = torch.rand(2, 3, 6, 7)
    mode = "constant" if padding == "zeros" else padding
    expected = F.pad(x, (radius,) * 4, mode=mode)
    assert torch.equal(perception.pad_edges(x, padding, radius), expected)
    # the slices the compiler sees, and the channels-last (B, H, W, C) state the compiled
    # step reads (slices, eager too)
    if padding != "zeros":  # zeros is F.pad everywhere
        assert torch.equal(perception.pad_by_slices(x, padding, radius, (2, 3)), expected)
    cl = perception.pad_edges(x.permute(0, 2, 3, 1), padding, radius, dims=(1, 2))
    assert torch.equal(cl.permute(0, 3, 1, 2), expected)


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
        perception.alive_planes(before[:, 3:4], 0.1),
        perception.alive_planes(after[:, 3:4], 0.1),
    )
    expected = pre & post
    cl = (t.permute(0, 2, 3, 1) for t in (before, after))
    got = gemm._alive_cl(*cl, 3, 0.1)
    assert expected.any() and not expected.all() and not expected[:2].any()
    assert (pre[2] != post[2]).any()  # cells where only one of the two is alive
    assert torch.equal(got.permute(0, 3, 1, 2), expected)


def test_rows_that_matter_are_the_cells_that_fire_near_life() -> None:
    """_rows_that_matter's separable maximum (1 x 5, then 5 x 1) is the 5 x 5 neighbourhood
    of cells above the threshold, the grid's edges included, times the fire mask."""
    torch.manual_seed(3)
    alpha = torch.where(torch.rand(3, 1, 17, 13) < 0.04, 0.5, 0.05)
    alpha[0, 0, 0, 12] = alpha[1, 0, 16, 0] = 0.5  # live corners
    x = torch.cat([torch.rand(3, 3, 17, 13), alpha], 1)
    fire = (torch.rand(3, 1, 17, 13) < 0.5).float()
    near = (F.max_pool2d(alpha, 5, stride=1, padding=2) > 0.1).float()
    for f, expected in ((fire, fire * near), (None, near)):
        keep = gemm.rows_that_matter(x.permute(0, 2, 3, 1), f, (3, 0.1))
        assert keep is not None
        assert torch.equal(keep, expected[:, 0])
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
    near1 = perception.alive_planes(x[:, 3:4], 0.1).float()
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


def test_a_registered_filter_bank_is_a_perception(monkeypatch: pytest.MonkeyPatch) -> None:
    """perception.register_bank: a config names the bank, the fast path and the reference
    agree on it, and an unknown name is refused with the registered ones listed."""
    from ncaflow.config import ConfigError

    bank = torch.stack([fixed_filters()[0], fixed_filters(laplace=True)[3]])  # identity, Laplace
    monkeypatch.setitem(perception.BANKS, "laplace_only", lambda: bank)
    cfg = ModelConfig(output_channels=4, hidden_channels=4, perception="laplace_only")
    cfg.validate()
    torch.manual_seed(0)
    ref, fast = NCA(config=cfg, impl="reference"), NCA(config=cfg, impl="fast")
    torch.nn.init.normal_(ref.fc2.weight, std=0.1)
    fast.load_state_dict(ref.state_dict())
    assert ref.kernels().shape == (8 * 2, 1, 3, 3)
    x = torch.rand(2, 8, 9, 9)
    g = [torch.Generator().manual_seed(1) for _ in range(2)]
    with torch.no_grad():
        torch.testing.assert_close(fast(x, 5, generator=g[1]), ref(x, 5, generator=g[0]))
    with pytest.raises(ConfigError, match="laplace_only"):
        check_perception("nosuch")
