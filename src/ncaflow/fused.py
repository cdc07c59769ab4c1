"""The NCA's update MLP as fused Triton kernels: ``relu(p @ W1.T + b1) @ W2.T``.

On a GPU at large batch the update MLP is bound by memory traffic, not arithmetic:
the eager formulation writes the hidden layer (128 floats per cell for the growing
config) to GPU memory, reads it back, and does so again in backward. Here the
hidden layer lives only in registers:

- forward: one kernel reads the perception rows ``p`` (N, K_in) and writes the
  update (N, K_out);
- backward: one kernel recomputes the hidden layer from ``p``, writes ``dL/dp`` and
  accumulates the weight gradients in registers over the row tiles it owns (a
  persistent grid of one program per SM, one partial sum each), which one
  reduction then adds up.

Both are custom operators, so ``torch.compile`` treats them as single nodes and
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
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

__all__ = ["LAUNCH", "PADDINGS", "Launch", "available", "fused_mlp", "perceive_mlp", "supports"]


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
    programs mean more parallelism and more partial sums to add up).
    """

    block_fwd: int = 128
    warps_fwd: int = 8
    block_bwd: int = 32
    warps_bwd: int = 4
    programs_per_sm: int = 1  # the fastest measured on an H200 (benchmarks/fused_mlp.py)
    block_adjoint: int = 128
    warps_adjoint: int = 4


LAUNCH = Launch()


@functools.cache
def _sms(device: torch.device) -> int:
    if device.type != "cuda":
        return 4  # the interpreter: a few programs, so that the partial sums are exercised
    return torch.cuda.get_device_properties(device).multi_processor_count


@functools.cache
def _kernels() -> Any:
    """The kernels' module, imported on first use: importing triton costs ~0.2 s, which every
    command that builds an NCA would pay otherwise. Triton reads TRITON_INTERPRET here."""
    from ncaflow import _fused_kernels

    return _fused_kernels


def _sizes(w1: Tensor, w2: Tensor) -> dict[str, int]:
    """The MLP's K_in, hidden and K_out (from w1 (H, K_in) and w2 (K_out, H)) padded to
    powers of two."""
    return {"KP": _pow2(w1.shape[1]), "HP": _pow2(w1.shape[0]), "OP": _pow2(w2.shape[0])}


def _partials(n: int, device: torch.device, KP: int, HP: int, OP: int) -> tuple[int, Tensor]:
    """The backward's row tiles and its programs' partial-sum buffer (one row per program)."""
    tiles = _cdiv(n, LAUNCH.block_bwd)
    programs = max(1, min(tiles, LAUNCH.programs_per_sm * _sms(device)))
    return tiles, torch.empty(programs, KP * HP + HP * OP + HP, device=device)


def supports(k_in: int, hidden: int, k_out: int) -> bool:
    """Whether the kernels take an MLP of these sizes: its weights, padded to powers of two,
    must stay on chip. Measured on an H200: 48 -> 128 -> 16 (the growing config) runs, while
    147 -> 192 -> 48 (padded 256 x 256) needs more shared memory than an SM has."""
    return _pow2(k_in) * _pow2(hidden) <= 64 * 128 and _pow2(k_out) <= 64


def _check(x: Tensor, w1: Tensor, b1: Tensor, w2: Tensor) -> None:
    """x: the kernels' input (perception rows or the state); w1, b1, w2: the MLP."""
    if not available(x.device):
        raise RuntimeError(
            "the fused NCA kernels need triton and a CUDA device (or TRITON_INTERPRET=1 "
            f"on CPU); got a {x.device.type} tensor"
            + ("" if importlib.util.find_spec("triton") else " and no triton installed")
        )
    if any(t.dtype != torch.float32 for t in (x, w1, b1, w2)):
        raise TypeError("the fused NCA kernels compute in float32; got other dtypes")
    if not supports(w1.shape[1], w1.shape[0], w2.shape[0]):
        raise ValueError(
            f"the fused NCA kernels take padded K_in x hidden <= 8192 and K_out <= 64; got "
            f"{w1.shape[1]} -> {w1.shape[0]} -> {w2.shape[0]} (check fused.supports first)"
        )


@torch.library.custom_op("ncaflow::fused_mlp", mutates_args=())
def _mlp_op(p: Tensor, w1: Tensor, b1: Tensor, w2: Tensor) -> Tensor:
    p, w1, b1, w2 = p.contiguous(), w1.contiguous(), b1.contiguous(), w2.contiguous()
    n, k_in = p.shape
    hid, k_out = w1.shape[0], w2.shape[0]
    out = torch.empty(n, k_out, device=p.device, dtype=p.dtype)
    _kernels().mlp_fwd[(_cdiv(n, LAUNCH.block_fwd),)](
        p, w1, b1, w2, out, n, k_in, hid, k_out, **_sizes(w1, w2),
        BLOCK=LAUNCH.block_fwd, PREC=_precision(), num_warps=LAUNCH.warps_fwd,
    )  # fmt: skip
    return out


@_mlp_op.register_fake
def _mlp_fake(p: Tensor, w1: Tensor, b1: Tensor, w2: Tensor) -> Tensor:
    return p.new_empty(p.shape[0], w2.shape[0])


@torch.library.custom_op("ncaflow::fused_mlp_backward", mutates_args=())
def _mlp_backward_op(
    p: Tensor, w1: Tensor, b1: Tensor, w2: Tensor, g: Tensor
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    p, w1, b1, w2, g = (t.contiguous() for t in (p, w1, b1, w2, g))
    n, k_in = p.shape
    hid, k_out = w1.shape[0], w2.shape[0]
    sizes = _sizes(w1, w2)
    tiles, part = _partials(n, p.device, **sizes)
    gp = torch.empty_like(p)
    _kernels().mlp_bwd[(part.shape[0],)](
        p, w1, b1, w2, g, gp, part, n, k_in, hid, k_out, tiles, **sizes,
        BLOCK=LAUNCH.block_bwd, PREC=_precision(), num_warps=LAUNCH.warps_bwd,
    )  # fmt: skip
    return (gp, *_weight_grads(part, k_in, hid, k_out, **sizes))


def _weight_grads(
    part: Tensor, k_in: int, hid: int, k_out: int, KP: int, HP: int, OP: int
) -> tuple[Tensor, Tensor, Tensor]:
    """dW1, dB1, dW2 from the backward programs' partial sums (PART in the kernels)."""
    total = part.sum(0)  # one reduction over the programs' partial sums
    gw1t = total[: KP * HP].view(KP, HP)[:k_in, :hid]
    gw2t = total[KP * HP : KP * HP + HP * OP].view(HP, OP)[:hid, :k_out]
    gb1 = total[KP * HP + HP * OP :][:hid]
    return gw1t.t().contiguous(), gb1.contiguous(), gw2t.t().contiguous()


@_mlp_backward_op.register_fake
def _mlp_backward_fake(
    p: Tensor, w1: Tensor, b1: Tensor, w2: Tensor, g: Tensor
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    return torch.empty_like(p), torch.empty_like(w1), torch.empty_like(b1), torch.empty_like(w2)


def _setup_context(ctx: Any, inputs: tuple[Tensor, ...], output: Tensor) -> None:
    ctx.save_for_backward(*inputs)


def _backward(ctx: Any, g: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    grads: tuple[Tensor, Tensor, Tensor, Tensor] = _mlp_backward_op(*ctx.saved_tensors, g)
    return grads


_mlp_op.register_autograd(_backward, setup_context=_setup_context)


def fused_mlp(p: Tensor, w1: Tensor, b1: Tensor, w2: Tensor) -> Tensor:
    """``relu(p @ w1.T + b1) @ w2.T`` for p (N, K_in), w1 (H, K_in), b1 (H,), w2 (K_out, H),
    differentiable in all four, without storing the hidden layer.

    A custom operator (``torch.ops.ncaflow.fused_mlp``), so ``torch.compile`` keeps it whole
    and fuses the element-wise work around it (:meth:`ncaflow.nca.NCA.step_gemm`)."""
    if not torch.compiler.is_compiling():  # checked when traced eagerly; dynamo cannot
        _check(p, w1, b1, w2)
    out: Tensor = _mlp_op(p, w1, b1, w2)
    return out


# -- perception inside the kernels -------------------------------------------------------

PADDINGS = ("zeros", "circular")  # what perceive_mlp's index arithmetic implements


def _check_perceive(x: Tensor, bank: Tensor, w1: Tensor, b1: Tensor, w2: Tensor) -> None:
    if x.dim() != 4 or bank.dim() != 2 or bank.shape[1] != 9:
        raise ValueError(
            f"perceive_mlp takes x (B, C, H, W) and bank (K, 9); got {tuple(x.shape)} and "
            f"{tuple(bank.shape)}"
        )
    if w1.shape[1] != bank.shape[0] * x.shape[1]:
        raise ValueError(
            f"perceive_mlp: w1 has {w1.shape[1]} inputs, not K*C = {bank.shape[0]}*{x.shape[1]}"
        )
    if x.numel() * bank.shape[0] >= 2**31:
        raise ValueError("perceive_mlp indexes with int32: the state has too many cells")
    _check(x, w1, b1, w2)


@torch.library.custom_op("ncaflow::perceive_mlp", mutates_args=())
def _perceive_op(
    x: Tensor, bank: Tensor, w1: Tensor, b1: Tensor, w2: Tensor, circular: bool
) -> Tensor:
    x, bank, w1, b1, w2 = (t.contiguous() for t in (x, bank, w1, b1, w2))
    b, c, h, w = x.shape
    n, k_in, hid, k_out = b * h * w, w1.shape[1], w1.shape[0], w2.shape[0]
    out = x.new_empty(b, k_out, h, w)
    _kernels().perceive_mlp_fwd[(_cdiv(n, LAUNCH.block_fwd),)](
        x, bank, w1, b1, w2, out, n, h, w, c, k_in, hid, k_out, **_sizes(w1, w2),
        BLOCK=LAUNCH.block_fwd, PREC=_precision(), CIRCULAR=circular,
        num_warps=LAUNCH.warps_fwd,
    )  # fmt: skip
    return out


@_perceive_op.register_fake
def _perceive_fake(
    x: Tensor, bank: Tensor, w1: Tensor, b1: Tensor, w2: Tensor, circular: bool
) -> Tensor:
    return x.new_empty(x.shape[0], w2.shape[0], x.shape[2], x.shape[3])


@torch.library.custom_op("ncaflow::perceive_mlp_backward", mutates_args=())
def _perceive_backward_op(
    x: Tensor, bank: Tensor, w1: Tensor, b1: Tensor, w2: Tensor, g: Tensor, circular: bool
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    x, bank, w1, b1, w2, g = (t.contiguous() for t in (x, bank, w1, b1, w2, g))
    b, c, h, w = x.shape
    n, k_in, hid, k_out = b * h * w, w1.shape[1], w1.shape[0], w2.shape[0]
    sizes = _sizes(w1, w2)
    tiles, part = _partials(n, x.device, **sizes)
    gp = x.new_empty(k_in, n)  # dL/dp, one perception column after another
    kernels = _kernels()
    kernels.perceive_mlp_bwd[(part.shape[0],)](
        x, bank, w1, b1, w2, g, gp, part, n, h, w, c, k_in, hid, k_out, tiles, **sizes,
        BLOCK=LAUNCH.block_bwd, PREC=_precision(), CIRCULAR=circular,
        num_warps=LAUNCH.warps_bwd,
    )  # fmt: skip
    gx = torch.empty_like(x)
    kernels.perceive_adjoint[(_cdiv(n, LAUNCH.block_adjoint),)](
        gp, bank, gx, n, h, w, c, bank.shape[0], CP=_pow2(c), BLOCK=LAUNCH.block_adjoint,
        CIRCULAR=circular, num_warps=LAUNCH.warps_adjoint,
    )  # fmt: skip
    return (gx, *_weight_grads(part, k_in, hid, k_out, **sizes))


@_perceive_backward_op.register_fake
def _perceive_backward_fake(
    x: Tensor, bank: Tensor, w1: Tensor, b1: Tensor, w2: Tensor, g: Tensor, circular: bool
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    return torch.empty_like(x), torch.empty_like(w1), torch.empty_like(b1), torch.empty_like(w2)


def _perceive_setup_context(ctx: Any, inputs: tuple[Any, ...], output: Tensor) -> None:
    *tensors, ctx.circular = inputs
    ctx.save_for_backward(*tensors)


def _perceive_backward(ctx: Any, g: Tensor) -> tuple[Tensor | None, ...]:
    x, bank, w1, b1, w2 = ctx.saved_tensors
    gx, gw1, gb1, gw2 = _perceive_backward_op(x, bank, w1, b1, w2, g, ctx.circular)
    return gx, None, gw1, gb1, gw2, None  # the bank is fixed


_perceive_op.register_autograd(_perceive_backward, setup_context=_perceive_setup_context)


def perceive_mlp(
    x: Tensor, bank: Tensor, w1: Tensor, b1: Tensor, w2: Tensor, padding: str = "zeros"
) -> Tensor:
    """The update of every cell, perception included: ``relu(p @ w1.T + b1) @ w2.T`` with
    p the perception of x (B, C, H, W) through the fixed 3x3 filters bank (K, 9), as
    (B, K_out, H, W). Differentiable in x, w1, b1 and w2, storing neither p nor the
    hidden layer: the backward recomputes both from x.

    w1 (H, K*C) takes its columns in the order j*C + c (channel c through filter j), which
    is not the column order of the NCA's fc1 (c*K + j): permute them first.
    padding: "zeros" or "circular" (:data:`PADDINGS`)."""
    if padding not in PADDINGS:
        raise ValueError(f"perceive_mlp pads with 'zeros' or 'circular', not {padding!r}")
    if not torch.compiler.is_compiling():
        _check_perceive(x, bank, w1, b1, w2)
    out: Tensor = _perceive_op(x, bank, w1, b1, w2, padding == "circular")
    return out
