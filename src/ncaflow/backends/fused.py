"""The NCA's update MLP as fused Triton kernels: ``relu(p @ W1.T + b1) @ W2.T``.

On a GPU at large batch the update MLP is bound by memory traffic, not arithmetic:
the eager formulation writes the hidden layer (128 floats per cell for the growing
config) to GPU memory, reads it back, and does so again in backward. Here the
hidden layer lives only in registers:

- forward: one kernel reads the perception rows ``p`` (N, K_in) and writes the
  update (N, K_out);
- backward: one kernel recomputes the hidden layer from ``p``, writes ``dL/dp`` and
  accumulates the weight gradients in registers over the row tiles it owns (a
  persistent grid of one program per SM, one partial sum each), which a second
  kernel adds up and writes in the weights' layouts.

Given a keep mask (the cells that fire and lie near life:
:func:`ncaflow.backends.gemm.rows_that_matter`), both kernels gather only the kept rows (ordered
first by a running count on the device, so CUDA graphs capture it) and write zeros for
the rest: at a fire rate of 0.5 that halves the MLP's work, more where the grid is mostly
dead.

The kernels are custom operators, so ``torch.compile`` treats them as single nodes and
fuses the perception, fire mask and alive mask around them (``NCA(impl="fused")``).

Sizes are padded to powers of two inside the kernels (zero weights, so padded
hidden units stay at relu(0) = 0 and change nothing). The kernels need Triton and
a CUDA device; with ``TRITON_INTERPRET=1`` (set before the kernels are first used)
Triton's interpreter runs them on CPU tensors, which is how the tests check them
where there is no GPU. Matrix products use TF32 on the GPU
(``NCAFLOW_FUSED_PRECISION=ieee`` for full fp32): the same precision PyTorch
gives cuDNN's 1x1 convolutions by default.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import types
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

__all__ = ["LAUNCH", "Launch", "available", "fits", "fused_mlp", "supports"]


def available(device: torch.device | str) -> bool:
    """Whether the fused kernels can run on tensors of this device."""
    if importlib.util.find_spec("triton") is None:
        return False
    kind = torch.device(device).type
    return kind == "cpu" if os.environ.get("TRITON_INTERPRET") == "1" else kind == "cuda"


def _precision() -> str:
    return os.environ.get("NCAFLOW_FUSED_PRECISION", "tf32")


def _pow2(n: int) -> int:
    """The next power of two, at least 16 (tl.arange and tl.dot need both)."""
    return max(16, 1 << (n - 1).bit_length())


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


@dataclass
class Launch:
    """Tile sizes and grid of the kernels (:data:`LAUNCH`; benchmarks may replace it).

    block_*: rows per tile; warps_*: warps per program; programs_per_sm: the backward's
    persistent grid (each program writes one partial sum of the weight gradients, so more
    programs mean more parallelism and more partial sums to add up). The backward holds its
    weight-gradient accumulators (padded K_in x hidden + hidden x K_out floats) in the
    registers of its warps, so MLPs above :data:`SMALL_ON_CHIP` take ``warps_bwd_large``.
    """

    block_fwd: int = 128
    warps_fwd: int = 8
    block_bwd: int = 32
    warps_bwd: int = 4
    programs_per_sm: int = 1  # the fastest measured on an H200 (benchmarks/fused_mlp.py)
    # 128 x 128 padded (the selfclass and BreastMNIST MLPs) on an H200: forward + backward
    # 301-308 us against 876-885 us with 4 warps at 256 x 28 x 28 rows
    # (benchmarks/reference/fused-mlp-tasks-20261207-h200.json)
    warps_bwd_large: int = 8

    def backward_warps(self, kp: int, hp: int) -> int:
        """Warps per backward program for padded K_in x hidden = kp x hp."""
        return self.warps_bwd if kp * hp <= SMALL_ON_CHIP else self.warps_bwd_large


LAUNCH = Launch()


@functools.cache
def _sms(device: torch.device) -> int:
    if device.type != "cuda":
        return 4  # the interpreter: a few programs, so that the partial sums are exercised
    return torch.cuda.get_device_properties(device).multi_processor_count


@functools.cache
def _kernels() -> types.ModuleType:
    """The kernels' module, imported on first use: importing triton costs ~0.2 s, which every
    command that builds an NCA would pay otherwise. Triton reads TRITON_INTERPRET at this
    point."""
    from ncaflow.backends import _fused_kernels

    return _fused_kernels


# sum_partials: entries per program, and at most this many partials per load (an H200 has
# 132 SMs, so one load there: the sum is short, and latency is what it costs)
_SUM_BLOCK, _SUM_ROWS = 32, 256
_ORDER_BLOCK = 1024  # row_order: rows per program


def _sizes(p: Tensor, w1: Tensor, w2: Tensor) -> dict[str, int]:
    """K_in, hidden and K_out padded to powers of two."""
    return {"KP": _pow2(p.shape[1]), "HP": _pow2(w1.shape[0]), "OP": _pow2(w2.shape[0])}


# The largest padded K_in x hidden, and K_out, that the kernels take (supports). Measured:
# 48 -> 128 -> 16 (the growing config, 64 x 128) runs on an H200 and an H100; 147 -> 192 -> 48
# (256 x 256) needs more shared memory than an H200's SM has; 128 x 128 (the self-classifying
# MNIST and BreastMNIST run configs: 90 -> 128 -> 29, 75 -> 96 -> 24) runs on an H100, whose
# SMs give a block 227 KiB of shared memory (benchmarks/reference/tasks-on-chip-20261207-h100.json:
# their training 1.5-3.1x the eager step's rate). On a GPU with less (an A100 has 163 KiB)
# 128 x 128 is untried, so `fits` keeps such MLPs to SMALL_ON_CHIP there.
ON_CHIP = 128 * 128
SMALL_ON_CHIP = 64 * 128
LARGE_SHARED_MEMORY = 227 * 1024  # bytes a block may opt in to on an H100 / H200 SM
MAX_K_OUT = 64


def supports(k_in: int, hidden: int, k_out: int) -> bool:
    """Whether the kernels take an MLP of these sizes: its weights, padded to powers of two,
    must stay on chip (:data:`ON_CHIP`, :data:`MAX_K_OUT`)."""
    return _pow2(k_in) * _pow2(hidden) <= ON_CHIP and _pow2(k_out) <= MAX_K_OUT


def fits(device: torch.device, k_in: int, hidden: int, k_out: int) -> bool:
    """Whether an MLP of these sizes runs on ``device``'s kernels: :func:`supports`, and above
    :data:`SMALL_ON_CHIP` only on a GPU with :data:`LARGE_SHARED_MEMORY` per block."""
    if not supports(k_in, hidden, k_out):
        return False
    if _pow2(k_in) * _pow2(hidden) <= SMALL_ON_CHIP or device.type != "cuda":
        return True
    props = torch.cuda.get_device_properties(device)
    return int(getattr(props, "shared_memory_per_block_optin", 0)) >= LARGE_SHARED_MEMORY


def _check(p: Tensor, w1: Tensor, b1: Tensor, w2: Tensor, keep: Tensor | None) -> None:
    if not available(p.device):
        raise RuntimeError(
            "the fused NCA kernels need triton and a CUDA device (or TRITON_INTERPRET=1 "
            f"on CPU); got a {p.device.type} tensor"
            + ("" if importlib.util.find_spec("triton") else " and no triton installed")
        )
    if any(t.dtype != torch.float32 for t in (p, w1, b1, w2)):
        raise TypeError("the fused NCA kernels compute in float32; got other dtypes")
    if not supports(p.shape[1], w1.shape[0], w2.shape[0]):
        raise ValueError(
            f"the fused NCA kernels take padded K_in x hidden <= {ON_CHIP} and K_out <= "
            f"{MAX_K_OUT}; got "
            f"{p.shape[1]} -> {w1.shape[0]} -> {w2.shape[0]} (check fused.supports first)"
        )
    if keep is not None and keep.numel() != p.shape[0]:
        raise ValueError(f"keep must hold one value per row: {keep.numel()} for {p.shape[0]} rows")


@torch.library.custom_op("ncaflow::row_order", mutates_args=())
def _order_op(keep: Tensor) -> tuple[Tensor, Tensor]:
    """The kept rows of a (N,) 0/1 mask first: (order (N,), pos (N,)), int32, where pos is
    the running count of kept rows, so pos[-1] rows are kept (read by the kernels on the
    device: nothing waits for it, and CUDA graphs capture it). An int32 mask is scanned as
    it is; any other dtype is cast first, one more kernel (a compiled step makes the mask
    int32 in the kernel that computes it: :func:`ncaflow.backends.gemm.rows_that_matter`)."""
    keep = keep.reshape(-1).to(torch.int32)
    n = keep.shape[0]
    pos = torch.cumsum(keep, 0, dtype=torch.int32)  # an int32 sum (cumsum widens to int64)
    order = torch.empty(n, device=keep.device, dtype=torch.int32)
    _kernels().row_order[(_cdiv(n, _ORDER_BLOCK),)](keep, pos, order, n, BLOCK=_ORDER_BLOCK)
    return order, pos


@_order_op.register_fake
def _order_fake(keep: Tensor) -> tuple[Tensor, Tensor]:
    n = keep.numel()
    return keep.new_empty(n, dtype=torch.int32), keep.new_empty(n, dtype=torch.int32)


def _rows(p: Tensor, order: Tensor | None, pos: Tensor | None) -> dict[str, Any]:
    """The row arguments of the MLP kernels: gathered through order, or all rows in order
    (the kernels then never read the two pointers, which are p)."""
    if order is None or pos is None:
        return {"ORDER": p, "POS": p, "GATHER": False}
    return {"ORDER": order, "POS": pos, "GATHER": True}


@torch.library.custom_op("ncaflow::fused_mlp", mutates_args=())
def _mlp_op(
    p: Tensor, w1: Tensor, b1: Tensor, w2: Tensor, order: Tensor | None, pos: Tensor | None
) -> Tensor:
    p, w1, b1, w2 = p.contiguous(), w1.contiguous(), b1.contiguous(), w2.contiguous()
    n, k_in = p.shape
    hid, k_out = w1.shape[0], w2.shape[0]
    out = torch.empty(n, k_out, device=p.device, dtype=p.dtype)
    _kernels().mlp_fwd[(_cdiv(n, LAUNCH.block_fwd),)](
        p, w1, b1, w2, out, N=n, K_IN=k_in, HID=hid, K_OUT=k_out, **_sizes(p, w1, w2),
        **_rows(p, order, pos), BLOCK=LAUNCH.block_fwd, PREC=_precision(),
        num_warps=LAUNCH.warps_fwd,
    )  # fmt: skip
    return out


@_mlp_op.register_fake
def _mlp_fake(
    p: Tensor, w1: Tensor, b1: Tensor, w2: Tensor, order: Tensor | None, pos: Tensor | None
) -> Tensor:
    return p.new_empty(p.shape[0], w2.shape[0])


@torch.library.custom_op("ncaflow::fused_mlp_backward", mutates_args=())
def _mlp_backward_op(
    p: Tensor,
    w1: Tensor,
    b1: Tensor,
    w2: Tensor,
    order: Tensor | None,
    pos: Tensor | None,
    g: Tensor,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    p, w1, b1, w2 = (t.contiguous() for t in (p, w1, b1, w2))
    # g is read through its row stride: with input channels (BreastMNIST, selfclass) it is a
    # slice of the state's gradient, whose copy cost a kernel a step (17 µs of ~405 at batch
    # 256 on an H100)
    g = g if g.stride(1) == 1 else g.contiguous()
    n, k_in = p.shape
    hid, k_out = w1.shape[0], w2.shape[0]
    sizes = _sizes(p, w1, w2)
    kp, hp, op = sizes["KP"], sizes["HP"], sizes["OP"]
    tiles = _cdiv(n, LAUNCH.block_bwd)
    programs = max(1, min(tiles, LAUNCH.programs_per_sm * _sms(p.device)))
    gp = torch.empty_like(p)
    part = torch.empty(programs, kp * hp + hp * op + hp, device=p.device, dtype=torch.float32)
    kernels = _kernels()
    kernels.mlp_bwd[(programs,)](
        p, w1, b1, w2, g, g.stride(0), gp, part, N=n, K_IN=k_in, HID=hid, K_OUT=k_out, TILES=tiles,
        **sizes, **_rows(p, order, pos), BLOCK=LAUNCH.block_bwd, PREC=_precision(),
        num_warps=LAUNCH.backward_warps(kp, hp),
    )  # fmt: skip
    gw1, gb1, gw2 = torch.empty_like(w1), torch.empty_like(b1), torch.empty_like(w2)
    kernels.sum_partials[(_cdiv(part.shape[1], _SUM_BLOCK),)](
        part, gw1, gw2, gb1, programs, k_in, hid, k_out, **sizes,
        BLOCK=_SUM_BLOCK, ROWS=min(_SUM_ROWS, _pow2(programs)),
    )  # fmt: skip
    return gp, gw1, gb1, gw2


# what torch.compile traces with: outputs shaped like p and the weights (a lambda, so that the
# operator's seven-argument signature is written once)
_mlp_backward_op.register_fake(
    lambda p, w1, b1, w2, *_: tuple(torch.empty_like(t) for t in (p, w1, b1, w2))
)


def _setup_context(ctx: Any, inputs: tuple[Tensor | None, ...], output: Tensor) -> None:
    ctx.save_for_backward(*inputs)


def _backward(ctx: Any, g: Tensor) -> tuple[Tensor | None, ...]:
    grads: tuple[Tensor, Tensor, Tensor, Tensor] = _mlp_backward_op(*ctx.saved_tensors, g)
    return (*grads, None, None)  # order and pos: integers, no gradient


_mlp_op.register_autograd(_backward, setup_context=_setup_context)


def fused_mlp(p: Tensor, w1: Tensor, b1: Tensor, w2: Tensor, keep: Tensor | None = None) -> Tensor:
    """``relu(p @ w1.T + b1) @ w2.T`` for p (N, K_in), w1 (H, K_in), b1 (H,), w2 (K_out, H),
    differentiable in all four, without storing the hidden layer.

    keep: optional 0/1 mask of the N rows (any shape of N elements, e.g. the fire mask):
    rows where it is 0 get zero outputs and zero gradients, and the kernels skip them
    (gathering the kept rows through :func:`_order_op`'s order), so a fire rate of 0.5
    halves the work. The result equals the unmasked one times ``keep``.

    A custom operator (``torch.ops.ncaflow.fused_mlp``), so ``torch.compile`` keeps it whole
    and fuses the element-wise work around it (:meth:`ncaflow.model.nca.NCA.step_gemm`)."""
    if not torch.compiler.is_compiling():  # checked when traced eagerly; dynamo cannot
        _check(p, w1, b1, w2, keep)
    order, pos = _order_op(keep) if keep is not None else (None, None)
    out: Tensor = _mlp_op(p, w1, b1, w2, order, pos)
    return out
