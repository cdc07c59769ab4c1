"""ncaflow.backends.fused: the update MLP as Triton kernels equals the PyTorch formulation.

Without a GPU the kernels run in Triton's interpreter (conftest.py sets
TRITON_INTERPRET=1 before triton is imported); on a CUDA machine the same checks
run on the GPU in full fp32 (NCAFLOW_FUSED_PRECISION=ieee).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator

import pytest
import torch

pytest.importorskip("triton")

from helpers import assert_same_rollout

import ncaflow.backends.fused
from ncaflow.config import ModelConfig
from ncaflow.model.nca import NCA


@pytest.fixture
def fused(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[object, str]]:
    """The module and the device its kernels run on here (the GPU, else the interpreter)."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    monkeypatch.setenv("NCAFLOW_FUSED_PRECISION", "ieee")
    # the reference's convolutions in full fp32 too (cuDNN allows TF32 by default): with
    # both in fp32 an H200 gave differences of 1e-7 in the state, 1e-6 in the gradients
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    if not ncaflow.backends.fused.available(device):
        pytest.skip("triton cannot run here (no GPU, TRITON_INTERPRET unset)")
    yield ncaflow.backends.fused, device


@pytest.mark.parametrize("kept", [None, 0.5, 0.0, 1.0])
@pytest.mark.parametrize(
    ("n", "k_in", "hidden", "k_out"),
    [(300, 48, 128, 16), (97, 60, 96, 24), (10, 15, 24, 5)],
)
def test_fused_mlp_equals_torch(  # type: ignore[no-untyped-def]
    fused, n: int, k_in: int, hidden: int, k_out: int, kept: float | None
) -> None:
    """Forward and gradients; with a keep mask (the fire mask's role) of about half, none
    or all of the rows, the kernels gather the kept rows and zero the others."""
    module, device = fused
    gen = torch.Generator().manual_seed(n)
    p, w1, b1, w2 = (
        torch.randn(*shape, generator=gen).to(device).requires_grad_()
        for shape in ((n, k_in), (hidden, k_in), (hidden,), (k_out, hidden))
    )
    keep = None if kept is None else (torch.rand(n, generator=gen) < kept).float().to(device)
    got = module.fused_mlp(p, w1, b1, w2, keep)
    ref = torch.relu(p @ w1.t() + b1) @ w2.t()
    if keep is not None:
        ref = ref * keep[:, None]
        assert 0 < keep.sum() < n if kept == 0.5 else keep.sum() == n * kept
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-4)
    # the output's gradient as a slice of a wider one (rows k_out + 3 apart), as a step with
    # input channels hands it over: the backward reads it through its row stride
    g = torch.randn(n, k_out + 3, generator=gen).to(device)[:, 1 : k_out + 1]
    assert not g.is_contiguous()
    for a, b in zip(
        torch.autograd.grad(got, [p, w1, b1, w2], g),
        torch.autograd.grad(ref, [p, w1, b1, w2], g),
        strict=True,
    ):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-3)


def test_partial_sums_over_many_programs_add_up(fused, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    """The backward's weight gradients are partial sums of many programs, which sum_partials
    adds a few at a time: here 10 programs, 4 per load (two full loads and a partial one)."""
    module, device = fused
    monkeypatch.setattr(module.LAUNCH, "programs_per_sm", 3)  # 3 x 4 interpreter "SMs" > 10
    monkeypatch.setattr(module, "_SUM_ROWS", 4)
    gen = torch.Generator().manual_seed(1)
    p, w1, b1, w2 = (
        torch.randn(*shape, generator=gen).to(device).requires_grad_()
        for shape in ((320, 20), (40, 20), (40,), (6, 40))
    )
    keep = (torch.rand(320, generator=gen) < 0.7).float().to(device)  # gathered rows too
    got = torch.autograd.grad(module.fused_mlp(p, w1, b1, w2, keep).sum(), [w1, b1, w2])
    ref_out = (torch.relu(p @ w1.t() + b1) @ w2.t()) * keep[:, None]
    ref = torch.autograd.grad(ref_out.sum(), [w1, b1, w2])
    for a, b in zip(got, ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize(("k_in", "hidden", "k_out"), [(75, 96, 24), (90, 128, 29)])
def test_the_image_tasks_mlps_compute_right_with_a_larger_on_chip_limit(  # type: ignore[no-untyped-def]
    fused, monkeypatch: pytest.MonkeyPatch, k_in: int, hidden: int, k_out: int
) -> None:
    """BreastMNIST's and self-classifying MNIST's update MLPs pad to 128 x 128: the kernels
    take them (ON_CHIP; they ran on an H100) and compute them right."""
    module, device = fused
    assert module.supports(k_in, hidden, k_out)
    limit = module.ON_CHIP
    monkeypatch.setattr(module, "ON_CHIP", 64 * 128)  # the limit before the H100 run
    assert not module.supports(k_in, hidden, k_out)
    monkeypatch.setattr(module, "ON_CHIP", limit)
    gen = torch.Generator().manual_seed(k_in)
    p, w1, b1, w2 = (
        torch.randn(*shape, generator=gen).to(device).requires_grad_()
        for shape in ((70, k_in), (hidden, k_in), (hidden,), (k_out, hidden))
    )
    keep = (torch.rand(70, generator=gen) < 0.5).float().to(device)
    got = module.fused_mlp(p, w1, b1, w2, keep)
    ref = (torch.relu(p @ w1.t() + b1) @ w2.t()) * keep[:, None]
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-4)
    g = torch.randn(70, k_out, generator=gen).to(device)
    for a, b in zip(
        torch.autograd.grad(got, [p, w1, b1, w2], g),
        torch.autograd.grad(ref, [p, w1, b1, w2], g),
        strict=True,
    ):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-3)


def test_sizes_beyond_the_kernels_are_refused(fused) -> None:  # type: ignore[no-untyped-def]
    module, device = fused
    assert module.supports(48, 128, 16) and module.supports(60, 96, 24)
    assert not module.supports(147, 192, 48) and not module.supports(48, 128, 100)
    p, w1, b1, w2 = (
        torch.zeros(*s, device=device) for s in ((4, 147), (192, 147), (192,), (48, 192))
    )
    with pytest.raises(ValueError, match=r"147 -> 192 -> 48"):
        module.fused_mlp(p, w1, b1, w2)


@pytest.mark.parametrize(
    ("inputs", "perception", "width", "padding"),
    [
        (0, "sobel", 32, "zeros"),
        (1, "learned", 32, "zeros"),
        (0, "sobel", 300, "zeros"),
        (0, "sobel_laplace", 32, "circular"),
        (0, "sobel", 32, "replicate"),
    ],
)
def test_fused_rollout_equals_reference(  # type: ignore[no-untyped-def]
    fused, inputs: int, perception: str, width: int, padding: str
) -> None:
    """NCA(impl="fused"): same rollout and gradients as the reference, same fire masks; an
    MLP too wide for the kernels (width 300) runs as GEMMs."""
    _, device = fused
    cfg = ModelConfig(
        input_channels=inputs,
        output_channels=4,
        hidden_channels=8,
        hidden_width=width,
        perception=perception,  # type: ignore[arg-type]
        padding=padding,  # type: ignore[arg-type]
        alive_channel=None if inputs else 3,
    )
    torch.manual_seed(0)
    ref = NCA(config=cfg, impl="reference")
    with torch.no_grad():
        ref.fc2.weight.normal_(0.0, 0.05)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fast = NCA(config=cfg, impl="fused")
    too_large = [w for w in caught if "too large for the fused kernels" in str(w.message)]
    assert len(too_large) == (width > 256)  # the fallback is announced
    fast.load_state_dict(ref.state_dict())
    x = torch.rand(2, cfg.channels, 10, 10)
    if not inputs:
        x.zero_()
        x[:, 3:, 5, 5] = 1.0
    assert_same_rollout(ref.to(device), fast.to(device), x.to(device), 5, rtol=1e-4, atol=1e-5)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU refusal")
def test_fused_needs_a_gpu_or_the_interpreter(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    x = torch.zeros(4, 3)
    with pytest.raises(RuntimeError, match="need triton and a CUDA device"):
        ncaflow.backends.fused.fused_mlp(x, torch.zeros(5, 3), torch.zeros(5), torch.zeros(2, 5))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU refusal")
def test_training_with_fused_on_a_cpu_is_refused_before_writing(
    tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    from helpers import digits_config

    from ncaflow.config import ConfigError
    from ncaflow.training.train import train

    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(ConfigError, match="needs triton and a CUDA device"):
        train(digits_config(), tmp_path / "run", impl="fused")
    assert not (tmp_path / "run").exists()


def test_fused_rollout_checkpointed_equals_stored(fused, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    """Checkpointing the rollout (train.gradient_checkpointing) recomputes the fused steps in
    backward: the same gradients as keeping every step."""
    _, device = fused
    cfg = ModelConfig(output_channels=4, hidden_channels=8, hidden_width=32, alive_channel=3)
    torch.manual_seed(0)
    nca = NCA(config=cfg, impl="fused").to(device)
    with torch.no_grad():
        nca.fc2.weight.normal_(0.0, 0.05)
    x = torch.zeros(2, cfg.channels, 10, 10, device=device)
    x[:, 3:, 5, 5] = 1.0
    calls = 0
    fused_backend = type(nca.backend)
    step = fused_backend.step  # one fused step, called from Python on every device

    def counted(self, model: NCA, x: torch.Tensor, fire: torch.Tensor | None) -> torch.Tensor:  # type: ignore[no-untyped-def]
        nonlocal calls
        calls += 1
        return step(self, model, x, fire)

    monkeypatch.setattr(fused_backend, "step", counted)
    grads, counts = [], []
    for every in (0, 2):
        calls = 0
        out = nca(x, 5, generator=torch.Generator(device).manual_seed(3), checkpoint_every=every)
        grads.append(torch.autograd.grad(out.square().sum(), list(nca.parameters())))
        counts.append(calls)
    assert counts == [5, 10]  # checkpointed: every step runs again in backward
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6)


def test_operators_pass_torch_opcheck(fused) -> None:  # type: ignore[no-untyped-def]
    """The custom operators' schemas, autograd registration and fake kernels (what
    torch.compile traces on a GPU, where the compiled step uses them) agree with the real
    kernels: torch.library.opcheck, with and without a keep mask."""
    module, device = fused
    gen = torch.Generator().manual_seed(7)
    p, w1, b1, w2 = (
        torch.randn(*shape, generator=gen).to(device).requires_grad_()
        for shape in ((40, 20), (24, 20), (24,), (6, 24))
    )
    keep = (torch.rand(40, generator=gen) < 0.5).float().to(device)
    torch.library.opcheck(module._order_op, (keep,))
    torch.library.opcheck(module._order_op, (keep.to(torch.int32),))  # a compiled step's
    order, pos = module._order_op(keep)
    torch.library.opcheck(module._mlp_op, (p, w1, b1, w2, order, pos))
    torch.library.opcheck(module._mlp_op, (p, w1, b1, w2, None, None))


def test_the_backward_of_a_large_mlp_launches_more_warps(  # type: ignore[no-untyped-def]
    fused, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The backward keeps its weight-gradient accumulators in its warps' registers: a 128 x 128
    MLP (BreastMNIST's) launches with warps_bwd_large (8: 2.9x faster than 4 on an H200), the
    growing config's 64 x 128 with warps_bwd (4, its fastest)."""
    module, device = fused
    kernels = module._kernels()
    real, seen = kernels.mlp_bwd, []

    class Spy:  # kernel[grid](...) as Triton launches it, recording the warps
        def __getitem__(self, grid: tuple[int, ...]):  # type: ignore[no-untyped-def]
            def launch(*args, **kwargs):  # type: ignore[no-untyped-def]
                seen.append(kwargs["num_warps"])
                return real[grid](*args, **kwargs)

            return launch

    monkeypatch.setattr(kernels, "mlp_bwd", Spy())
    for k_in, hidden, k_out in ((48, 128, 16), (75, 96, 24)):
        p, w1, b1, w2 = (
            torch.randn(*shape).to(device).requires_grad_()
            for shape in ((40, k_in), (hidden, k_in), (hidden,), (k_out, hidden))
        )
        module.fused_mlp(p, w1, b1, w2).sum().backward()
    assert seen == [module.LAUNCH.warps_bwd, module.LAUNCH.warps_bwd_large] == [4, 8]


def test_large_mlps_take_the_kernels_only_where_the_gpu_has_the_shared_memory(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """fits: up to 64 x 128 on any GPU; 128 x 128 (BreastMNIST's 75 -> 96 -> 24) only with an
    H100's 227 KiB of shared memory per block (an A100's 163 KiB: the eager step instead)."""
    from types import SimpleNamespace

    from ncaflow.backends import fused as module

    gpu = torch.device("cuda", 0)
    for optin, large in ((232448, True), (167936, False)):
        props = SimpleNamespace(shared_memory_per_block_optin=optin)
        monkeypatch.setattr(torch.cuda, "get_device_properties", lambda d, p=props: p)
        assert module.fits(gpu, 48, 128, 16)  # the growing config: every GPU
        assert module.fits(gpu, 75, 96, 24) is large
        assert not module.fits(gpu, 147, 192, 48)  # beyond ON_CHIP anywhere
    assert module.fits(torch.device("cpu"), 75, 96, 24)  # Triton's interpreter: no SM
