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
import types
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

__all__ = [
    "LAUNCH",
    "Launch",
    "available",
    "fused_mlp",
    "stencil_mlp",
    "stencil_mlp_backward",
    "supports",
    "supports_stencil",
]


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
    programs mean more parallelism and more partial sums to add up); stencil: whether an
    NCA with fixed filters computes them inside the MLP's kernels (:func:`stencil_mlp`) or
    leaves them to torch.compile (:func:`fused_mlp`); read when the NCA is built.
    """

    block_fwd: int = 128
    warps_fwd: int = 8
    block_bwd: int = 32
    warps_bwd: int = 4
    programs_per_sm: int = 1  # the fastest measured on an H200 (benchmarks/fused_mlp.py)
    stencil: bool = True  # NCAs built while True run fixed filters in the kernels (stencil_mlp)


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
    from ncaflow import _fused_kernels

    return _fused_kernels


# sum_partials: entries per program, and at most this many partials per load (an H200 has
# 132 SMs, so one load there: the sum is short, and latency is what it costs)
_SUM_BLOCK, _SUM_ROWS = 32, 256


def _programs(tiles: int, device: torch.device) -> int:
    """The backward's persistent grid: LAUNCH.programs_per_sm per SM, at most one per tile."""
    return max(1, min(tiles, LAUNCH.programs_per_sm * _sms(device)))


def _sum_partials(
    part: Tensor, gw1: Tensor, gb1: Tensor, gw2: Tensor, shape: dict[str, int]
) -> None:
    """Add up a backward's partial weight gradients (one row of ``part`` per program) into
    gw1, gb1, gw2 (kernels.sum_partials)."""
    programs = part.shape[0]
    keys = ("C", "NF", "HID", "K_OUT", "SLOTS", "KP", "HP", "OP")
    _kernels().sum_partials[(_cdiv(part.shape[1], _SUM_BLOCK),)](
        part, gw1, gw2, gb1, programs, *(shape[k] for k in keys),
        BLOCK=_SUM_BLOCK, ROWS=min(_SUM_ROWS, _pow2(programs)),
    )  # fmt: skip


def _shape(
    n: int, c: int, nf: int, hidden: int, k_out: int, h: int = 1, w: int = 1
) -> dict[str, int]:
    """The kernels' size arguments for n rows of c channels through nf filters (nf = 1 and
    c = K_in for perception rows given as P), padded to powers of two (SLOTS, KP, HP, OP)."""
    slots = 1 << (nf - 1).bit_length()
    kp = _pow2(c * nf) if nf == 1 else slots * _pow2(c)
    return {
        "N": n, "H": h, "W": w, "C": c, "NF": nf, "HID": hidden, "K_OUT": k_out,
        "SLOTS": slots, "KP": kp, "HP": _pow2(hidden), "OP": _pow2(k_out),
    }  # fmt: skip


def _part(programs: int, shape: dict[str, int], device: torch.device) -> Tensor:
    """Room for the backward's partial weight gradients, one row per program."""
    kp, hp, op = shape["KP"], shape["HP"], shape["OP"]
    return torch.empty(programs, kp * hp + hp * op + hp, device=device, dtype=torch.float32)


def supports(k_in: int, hidden: int, k_out: int) -> bool:
    """Whether the kernels take an MLP of these sizes: its weights, padded to powers of two,
    must stay on chip. Measured on an H200: 48 -> 128 -> 16 (the growing config) runs, while
    147 -> 192 -> 48 (padded 256 x 256) needs more shared memory than an SM has."""
    return _pow2(k_in) * _pow2(hidden) <= 64 * 128 and _pow2(k_out) <= 64


def _check_runs(*tensors: Tensor) -> None:
    """That the kernels can run on these tensors: device, triton and dtypes."""
    if not available(tensors[0].device):
        raise RuntimeError(
            "the fused NCA kernels need triton and a CUDA device (or TRITON_INTERPRET=1 "
            f"on CPU); got a {tensors[0].device.type} tensor"
            + ("" if importlib.util.find_spec("triton") else " and no triton installed")
        )
    if any(t.dtype != torch.float32 for t in tensors):
        raise TypeError("the fused NCA kernels compute in float32; got other dtypes")


def _check(p: Tensor, w1: Tensor, b1: Tensor, w2: Tensor) -> None:
    _check_runs(p, w1, b1, w2)
    if not supports(p.shape[1], w1.shape[0], w2.shape[0]):
        raise ValueError(
            f"the fused NCA kernels take padded K_in x hidden <= 8192 and K_out <= 64; got "
            f"{p.shape[1]} -> {w1.shape[0]} -> {w2.shape[0]} (check fused.supports first)"
        )


@torch.library.custom_op("ncaflow::fused_mlp", mutates_args=())
def _mlp_op(p: Tensor, w1: Tensor, b1: Tensor, w2: Tensor) -> Tensor:
    p, w1, b1, w2 = p.contiguous(), w1.contiguous(), b1.contiguous(), w2.contiguous()
    shape = _shape(p.shape[0], p.shape[1], 1, w1.shape[0], w2.shape[0])
    out = torch.empty(p.shape[0], w2.shape[0], device=p.device, dtype=p.dtype)
    _kernels().mlp_fwd[(_cdiv(p.shape[0], LAUNCH.block_fwd),)](
        p, p, p, w1, b1, w2, out, **shape,
        BLOCK=LAUNCH.block_fwd, PREC=_precision(), STENCIL=False, num_warps=LAUNCH.warps_fwd,
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
    shape = _shape(p.shape[0], p.shape[1], 1, w1.shape[0], w2.shape[0])
    return _backward_launch(p, p, p, w1, b1, w2, g, shape, stencil=False)


def _backward_launch(
    p: Tensor,
    sp: Tensor,
    filt: Tensor,
    w1: Tensor,
    b1: Tensor,
    w2: Tensor,
    g: Tensor,
    shape: dict[str, int],
    stencil: bool,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """kernels.mlp_bwd, then sum_partials: (dL/dP, dL/dw1, dL/db1, dL/dw2)."""
    tiles = _cdiv(shape["N"], LAUNCH.block_bwd)
    programs = _programs(tiles, g.device)
    gp = g.new_empty(shape["N"], shape["C"] * shape["NF"])
    part = _part(programs, shape, g.device)
    gw1, gb1, gw2 = torch.empty_like(w1), torch.empty_like(b1), torch.empty_like(w2)
    _kernels().mlp_bwd[(programs,)](
        p, sp, filt, w1, b1, w2, g, gp, part, **shape, TILES=tiles,
        BLOCK=LAUNCH.block_bwd, PREC=_precision(), STENCIL=stencil, num_warps=LAUNCH.warps_bwd,
    )  # fmt: skip
    _sum_partials(part, gw1, gb1, gw2, shape)
    return gp, gw1, gb1, gw2


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


# -- the fixed filters and the MLP in one kernel ------------------------------------------


def supports_stencil(channels: int, n_filters: int, hidden: int, k_out: int) -> bool:
    """Whether :func:`stencil_mlp` takes a model of these sizes: at most four fixed filters,
    whose first-layer weights, each padded to powers of two, stay on chip as in
    :func:`supports`."""
    kp = _shape(1, channels, n_filters, hidden, k_out)["KP"]
    return n_filters <= 4 and kp * _pow2(hidden) <= 64 * 128 and _pow2(k_out) <= 64


def _stencil_shape(sp: Tensor, filt: Tensor, w1: Tensor, w2: Tensor) -> dict[str, int]:
    b, hp2, wp2, c = sp.shape
    h, w = hp2 - 2, wp2 - 2
    return _shape(b * h * w, c, filt.shape[0], w1.shape[0], w2.shape[0], h, w)


@torch.library.custom_op("ncaflow::stencil_mlp", mutates_args=())
def _stencil_op(sp: Tensor, filt: Tensor, w1: Tensor, b1: Tensor, w2: Tensor) -> Tensor:
    sp, filt, w1, b1, w2 = (t.contiguous() for t in (sp, filt, w1, b1, w2))
    shape = _stencil_shape(sp, filt, w1, w2)
    out = torch.empty(shape["N"], shape["K_OUT"], device=sp.device, dtype=sp.dtype)
    _kernels().mlp_fwd[(_cdiv(shape["N"], LAUNCH.block_fwd),)](
        sp, sp, filt, w1, b1, w2, out, **shape,
        BLOCK=LAUNCH.block_fwd, PREC=_precision(), STENCIL=True, num_warps=LAUNCH.warps_fwd,
    )  # fmt: skip
    return out


@_stencil_op.register_fake
def _stencil_fake(sp: Tensor, filt: Tensor, w1: Tensor, b1: Tensor, w2: Tensor) -> Tensor:
    b, hp2, wp2, _ = sp.shape
    return sp.new_empty(b * (hp2 - 2) * (wp2 - 2), w2.shape[0])


@torch.library.custom_op("ncaflow::stencil_mlp_backward", mutates_args=())
def _stencil_backward_op(
    sp: Tensor, filt: Tensor, w1: Tensor, b1: Tensor, w2: Tensor, g: Tensor
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    sp, filt, w1, b1, w2, g = (t.contiguous() for t in (sp, filt, w1, b1, w2, g))
    shape = _stencil_shape(sp, filt, w1, w2)
    return _backward_launch(sp, sp, filt, w1, b1, w2, g, shape, stencil=True)


@_stencil_backward_op.register_fake
def _stencil_backward_fake(
    sp: Tensor, filt: Tensor, w1: Tensor, b1: Tensor, w2: Tensor, g: Tensor
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    n = g.shape[0]
    gp = sp.new_empty(n, sp.shape[-1] * filt.shape[0])
    return gp, torch.empty_like(w1), torch.empty_like(b1), torch.empty_like(w2)


def _check_stencil(sp: Tensor, filt: Tensor, w1: Tensor, b1: Tensor, w2: Tensor) -> None:
    _check_runs(sp, filt, w1, b1, w2)
    c, nf = sp.shape[-1], filt.shape[0]
    if sp.dim() != 4 or filt.shape[1:] != (9,) or w1.shape[1] != c * nf:
        raise ValueError(
            f"stencil_mlp takes a padded (B, H+2, W+2, C) state, (NF, 9) filters and W1 of "
            f"C * NF columns; got {tuple(sp.shape)}, {tuple(filt.shape)}, {tuple(w1.shape)}"
        )
    if not supports_stencil(c, nf, w1.shape[0], w2.shape[0]):
        raise ValueError(
            f"stencil_mlp takes at most 4 filters, padded NF x C x hidden <= 8192 and K_out "
            f"<= 64; got {nf} x {c} -> {w1.shape[0]} -> {w2.shape[0]} "
            "(check fused.supports_stencil first)"
        )


def stencil_mlp(sp: Tensor, filt: Tensor, w1: Tensor, b1: Tensor, w2: Tensor) -> Tensor:
    """:func:`fused_mlp` of the fixed filters of a padded state, without storing them:
    sp (B, H+2, W+2, C) channels last, filt (NF, 9) the filters' 3 x 3 weights, w1
    (H, C * NF) with channel c through filter j at column c * NF + j (:func:`ncaflow.nca.
    perceive`'s order). Returns the update of every cell as rows, (B * H * W, K_out).

    Forward only: the caller differentiates it with :func:`stencil_mlp_backward`, which
    gives the gradient of the perception rather than of sp, because the filters' adjoint is
    the caller's to write with the filters as constants (:class:`ncaflow.nca._StencilMLP`).
    """
    if not torch.compiler.is_compiling():
        _check_stencil(sp, filt, w1, b1, w2)
    out: Tensor = _stencil_op(sp, filt, w1, b1, w2)
    return out


def stencil_mlp_backward(
    sp: Tensor, filt: Tensor, w1: Tensor, b1: Tensor, w2: Tensor, g: Tensor
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The gradients of :func:`stencil_mlp` for the gradient g (B * H * W, K_out) of its
    output: (dL/dP (B * H * W, C * NF) in w1's column order, dL/dw1, dL/db1, dL/dw2)."""
    grads: tuple[Tensor, Tensor, Tensor, Tensor] = _stencil_backward_op(sp, filt, w1, b1, w2, g)
    return grads
