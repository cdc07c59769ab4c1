"""The training loss reaches the host unchanged, late by one iteration only on CUDA."""

from __future__ import annotations

import pytest
import torch

from ncaflow.training.readback import LossReadback, current_lr

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def test_on_the_cpu_every_loss_is_read_at_once() -> None:
    rb = LossReadback(device=torch.device("cpu"))
    losses = torch.tensor([0.25, 0.5, 1.0])
    rb.push(1, losses, 0.1)
    assert list(rb.ready()) == [(1, losses.mean().item(), 0.1)]
    assert list(rb.ready(flush=True)) == []


@cuda
def test_on_cuda_the_newest_loss_waits_until_the_next_iteration_or_a_flush() -> None:
    rb = LossReadback(device=torch.device("cuda"))
    a, b = torch.tensor([1.0, 3.0], device="cuda"), torch.tensor([float("nan")], device="cuda")
    rb.push(1, a, 0.1)
    assert list(rb.ready()) == []  # iteration 1 may still run
    rb.push(2, b, 0.2)
    assert list(rb.ready()) == [(1, 2.0, 0.1)]
    ((n, loss, lr),) = rb.ready(flush=True)
    assert (n, lr) == (2, 0.2) and loss != loss  # NaN arrives as NaN


def test_a_tensor_learning_rate_is_computed_not_read_back() -> None:
    """A capturable optimiser's learning rate lives in a tensor; the logged float is train.lr
    times the schedule's factor, the value the tensor holds."""
    w = torch.nn.Parameter(torch.zeros(3))
    factor = lambda it: 0.5**it  # noqa: E731
    for lr in (0.01, torch.tensor(0.01)):
        opt = torch.optim.Adam([w], lr=lr, foreach=False)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
        for _ in range(3):
            w.grad = torch.ones(3)
            opt.step()
            sched.step()
            got = current_lr(opt, sched, 0.01)
            assert isinstance(got, float)
            assert got == pytest.approx(float(opt.param_groups[0]["lr"]), rel=1e-6)
            assert got == pytest.approx(0.01 * factor(sched.last_epoch), rel=1e-12)
