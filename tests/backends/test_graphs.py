"""CUDA-graph training iterations (ncaflow.backends.graphs): same results as eager execution.

The CUDA tests run wherever a GPU is present (the project's GPU checks); on a CPU
only the fallback is checked, which is what CI exercises.
"""

from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from helpers import digits_config

from ncaflow.backends.graphs import GraphedIteration, graphs_supported
from ncaflow.config import ModelConfig, RunConfig, from_dict
from ncaflow.model.nca import NCA
from ncaflow.training.train import train

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
DEVICE = "cuda"


def make_nca(device: str, impl: str = "reference") -> NCA:
    torch.manual_seed(0)
    cfg = ModelConfig(output_channels=4, hidden_channels=8, hidden_width=32, alive_channel=3)
    nca = NCA(config=cfg, impl=impl)  # type: ignore[arg-type]
    with torch.no_grad():
        nca.fc2.weight.normal_(0.0, 0.02)
    return nca.to(device)


def seed_state(device: str, batch: int = 4, size: int = 24) -> torch.Tensor:
    x = torch.zeros(batch, 12, size, size, device=device)
    x[:, 3:, size // 2, size // 2] = 1.0
    return x


def test_graphs_need_cuda_and_fall_back_to_eager_on_cpu() -> None:
    assert not graphs_supported("cpu")
    nca = make_nca("cpu")
    gen = torch.Generator().manual_seed(3)
    run = GraphedIteration(
        lambda steps, x: nca(x, steps, generator=gen),
        params=list(nca.parameters()),
        optimizer=None,
        generator=gen,
    )
    x = seed_state("cpu")
    got = run(5, x)
    assert len(run) == 0 and not run.enabled
    expected = nca(x, 5, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(got, expected, rtol=0, atol=0)


def rollout_graphs(device: str, impl: str) -> None:
    """Graph replays draw the same fire masks as eager calls, one graph per rollout length."""
    nca = make_nca(device, impl)
    gen = torch.Generator(device=device).manual_seed(7)

    @torch.no_grad()
    def rollout(steps: int, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = nca(x, steps, generator=gen)
        return out

    run = GraphedIteration(rollout, params=list(nca.parameters()), optimizer=None, generator=gen)
    eager_gen = torch.Generator(device=device).manual_seed(7)
    x = seed_state(device)
    for steps in (6, 9, 6, 6, 9):
        got = run(steps, x).clone()
        expected = nca(x, steps, generator=eager_gen)
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
        x = expected
    assert len(run) == 2


@cuda
@pytest.mark.parametrize("impl", ["reference", "fast"])
def test_graph_rollouts_equal_eager(impl: str) -> None:
    rollout_graphs("cuda", impl)


@cuda
@pytest.mark.parametrize("impl", ["reference", "fast"])
def test_graphed_training_steps_equal_eager(impl: str) -> None:
    """Rollout + loss + backward + capturable Adam: weights after 12 graph replays equal
    12 eager iterations (the warm-up before capture changes nothing)."""
    device = "cuda"
    models = [make_nca(device, impl) for _ in range(2)]
    target = torch.rand(4, 4, 24, 24, generator=torch.Generator().manual_seed(1)).to(device)
    runs = []
    for graphs, nca in zip((True, False), models, strict=True):
        gen = torch.Generator(device=device).manual_seed(11)
        opt = torch.optim.Adam(
            nca.parameters(), lr=torch.tensor(2e-3, device=device), capturable=True
        )

        def step(steps: int, x: torch.Tensor, nca: NCA = nca, opt=opt, gen=gen) -> torch.Tensor:
            loss = F.mse_loss(nca(x, steps, generator=gen)[:, :4], target)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            return loss.detach()

        runs.append(
            GraphedIteration(
                step, params=list(nca.parameters()), optimizer=opt, generator=gen, enabled=graphs
            )
        )
    x = seed_state(device)
    for steps in (8, 12, 8, 12, 12, 8, 8, 12, 8, 8, 12, 12):
        losses = [float(run(steps, x)) for run in runs]
        assert losses[0] == pytest.approx(losses[1], rel=1e-4, abs=1e-7)
    assert len(runs[0]) == 2
    for a, b in zip(models[0].parameters(), models[1].parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def tiny_growing(tmp_path, graphs: bool) -> RunConfig:  # type: ignore[no-untyped-def]
    from PIL import Image

    img = Image.new("RGBA", (16, 16), (0, 0, 0, 0))
    for i in range(5, 11):
        for j in range(5, 11):
            img.putpixel((i, j), (200, 40, 40, 255))
    path = tmp_path / "target.png"
    img.save(path)
    return from_dict(
        RunConfig,
        {
            "task": "growing",
            "model": {"hidden_channels": 8, "hidden_width": 32},
            "data": {
                "target": str(path),
                "size": 16,
                "pad": 4,
                "pool_size": 32,
                "persistence_steps": 20,
            },
            "train": {
                "iterations": 30,
                "batch_size": 4,
                "steps": [8, 12],
                "lr": 2e-3,
                "eval_every": 10,
                "checkpoint_every": 10,
                "grad_norm": True,
                "device": DEVICE,
                "cuda_graphs": graphs,
                "progress": False,
            },
        },
    )


@cuda
def test_train_with_cuda_graphs_equals_eager(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The trainer's graph path (pool, grad_norm, LR schedule) follows the eager path."""
    results = []
    for graphs in (True, False):
        cfg = tiny_growing(tmp_path, graphs)
        results.append(train(cfg, tmp_path / f"run-{graphs}"))
    hist = [[row["loss"] for row in r.history] for r in results]
    assert hist[0] == pytest.approx(hist[1], rel=1e-3)
    for name in ("model", "last"):
        assert (tmp_path / f"run-True/{name}.safetensors").exists()


@cuda
def test_interrupted_graph_training_resumes_on_cuda(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A checkpoint written while training on CUDA (its CUDA generator state included) resumes."""

    class Crash(Exception):
        pass

    def crash(it: int) -> None:
        if it == 15:
            raise Crash

    cfg = tiny_growing(tmp_path, graphs=True)
    with pytest.raises(Crash):
        train(cfg, tmp_path / "run", on_iteration=crash)
    result = train(cfg, tmp_path / "run")
    assert result.iterations == 30 and (tmp_path / "run" / "model.safetensors").exists()


@cuda
def test_train_fused_with_cuda_graphs_follows_the_reference(
    tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    """`ncaflow train --impl fused` on a GPU (compiled step, Triton MLP, CUDA graphs) trains
    like the eager reference, both in full fp32."""
    pytest.importorskip("triton")
    monkeypatch.setenv("NCAFLOW_FUSED_PRECISION", "ieee")
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    results = [
        train(tiny_growing(tmp_path, graphs), tmp_path / impl, impl=impl)  # type: ignore[arg-type]
        for impl, graphs in (("fused", True), ("reference", False))
    ]
    hist = [[row["loss"] for row in r.history] for r in results]
    assert hist[0] == pytest.approx(hist[1], rel=1e-2)
    assert hist[0][-1] < hist[0][0]


def test_auto_resolves_to_the_fused_kernels_only_on_cuda_where_they_fit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """train's 'auto': the fused kernels on a CUDA device with Triton, for MLPs they take."""
    import ncaflow.backends.fused
    from ncaflow.training.train import resolve_impl

    cfg = digits_config()
    cuda_dev, cpu = torch.device("cuda"), torch.device("cpu")
    monkeypatch.setattr(ncaflow.backends.fused, "available", lambda device: True)
    assert resolve_impl("auto", cfg, cuda_dev).name == "fused"
    assert resolve_impl("auto", cfg, cpu).name == "auto"  # the CPU fast path
    assert resolve_impl("reference", cfg, cuda_dev).name == "reference"  # asked for: kept
    wide = replace(cfg, model=replace(cfg.model, hidden_width=160))  # padded 64 x 256
    for optin, name in ((232448, "fused"), (167936, "auto")):  # an H100's, an A100's
        props = SimpleNamespace(shared_memory_per_block_optin=optin)
        monkeypatch.setattr(torch.cuda, "get_device_properties", lambda d, p=props: p)
        assert resolve_impl("auto", wide, cuda_dev).name == name  # fused.fits
    wider = replace(cfg, model=replace(cfg.model, hidden_width=300))  # padded 64 x 512
    assert resolve_impl("auto", wider, cuda_dev).name == "auto"  # beyond the kernels
    monkeypatch.setattr(ncaflow.backends.fused, "available", lambda device: False)  # no triton
    assert resolve_impl("auto", cfg, cuda_dev).name == "auto"


@cuda
def test_auto_trains_a_task_on_the_fused_kernels_like_the_reference(
    tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    """`ncaflow train` with "auto" on a GPU (the fused kernels, CUDA graphs) on
    self-classification: random step counts, evaluation at another batch size than training
    (179 validation digits), the same losses and accuracy as the eager reference, both in
    full fp32."""
    pytest.importorskip("triton")
    monkeypatch.setenv("NCAFLOW_FUSED_PRECISION", "ieee")
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    results = [
        train(digits_config(device="cuda", iterations=20), tmp_path / impl, impl=impl)  # type: ignore[arg-type]
        for impl in ("auto", "reference")
    ]
    hist = [[row["loss"] for row in r.history] for r in results]
    assert hist[0] == pytest.approx(hist[1], rel=1e-2)
    assert results[0].best_metric == pytest.approx(results[1].best_metric, abs=0.02)
