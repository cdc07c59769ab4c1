"""Host-drawn batches reach the device without a synchronisation, with the same values."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ncaflow.tasks.transfer import upload

REPO = Path(__file__).resolve().parents[2]
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def test_upload_on_the_cpu_is_the_tensor_itself() -> None:
    t = torch.randint(10, (8,))
    assert upload(t, "cpu") is t


@cuda
def test_upload_to_cuda_is_asynchronous_and_equal() -> None:
    t = torch.randint(1000, (256,))
    torch.cuda.set_sync_debug_mode("error")  # a pageable copy would raise here
    try:
        on = upload(t, "cuda")
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert on.device.type == "cuda" and torch.equal(on.cpu(), t)


@cuda
@pytest.mark.parametrize("name", ["growing", "selfclass", "breastmnist", "kvasir"])
def test_sampling_a_batch_never_waits_for_the_gpu(name: str, mirror: Path, tmp_path: Path) -> None:
    """Every run config's batch draw (indices, flips, shifts, the pool's sort and cut) runs
    under CUDA's sync debug mode without a synchronising call."""
    from ncaflow.tasks import get_task
    from ncaflow.tasks.runconfig import load_config

    overrides = ["train.batch_size=8", "data.augment_shift=2"] if name == "breastmnist" else []
    if name == "growing":
        overrides = ["train.batch_size=8", "data.damage=2"]
    data = [f"data.root={tmp_path}", f"data.mirror={mirror}", "train.device=cuda"]
    config = load_config(REPO / f"config/runs/{name}.yaml", [*overrides, *data])
    task = get_task(config.task)(config=config, device="cuda")
    task.setup()
    gen = torch.Generator().manual_seed(0)
    task.sample(gen)  # first draw: allocations, pinned buffers
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(3):
            task.sample(gen)
    finally:
        torch.cuda.set_sync_debug_mode("default")
