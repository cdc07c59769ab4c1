"""The NCA's update MLP as fused Triton kernels: ``relu(p @ W1.T + b1) @ W2.T``.

On a GPU at large batch the update MLP is bound by memory traffic, not arithmetic:
the eager formulation writes the hidden layer (128 floats per cell for the growing
config) to GPU memory, reads it back, and does so again in backward. Here the
hidden layer lives only in registers:

- forward: one kernel reads the perception rows ``p`` (N, K_in) and writes the
  update (N, K_out);
- backward: one kernel recomputes the hidden layer from ``p``, writes ``dL/dp`` and
  accumulates the weight gradients in registers over the tiles it owns (a
  persistent grid, one partial sum per program), which the host then adds up.

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
from typing import Any

import torch
from torch import Tensor

__all__ = ["available", "fused_mlp"]


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


def _programs(device: torch.device, tiles: int) -> int:
    """Persistent grid size: a few programs per SM, never more than there are tiles."""
    if device.type == "cuda":
        sms = torch.cuda.get_device_properties(device).multi_processor_count
        return max(1, min(tiles, 4 * sms))
    return max(1, min(tiles, 4))


@functools.cache
def _kernels() -> tuple[Any, Any]:
    """The kernels, imported on first use: importing triton costs ~0.2 s, which every command
    that builds an NCA would pay otherwise. Triton reads TRITON_INTERPRET at this point."""
    from ncaflow import _fused_kernels as k

    return k.mlp_fwd, k.mlp_bwd


def _sizes(p: Tensor, w1: Tensor, w2: Tensor) -> tuple[int, int, int, int, int, int, int]:
    n, k_in = p.shape
    hid, k_out = w1.shape[0], w2.shape[0]
    return n, k_in, hid, k_out, _pow2(k_in), _pow2(hid), _pow2(k_out)


def _block(hp: int) -> int:
    return 64 if hp <= 128 else 32  # keep the hidden tile (BLOCK x HP floats) in registers


class _FusedMLP(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, p: Tensor, w1: Tensor, b1: Tensor, w2: Tensor) -> Tensor:
        p, w1, w2 = p.contiguous(), w1.contiguous(), w2.contiguous()  # no-ops for NCA weights
        n, k_in, hid, k_out, kp, hp, op = _sizes(p, w1, w2)
        out = torch.empty(n, k_out, device=p.device, dtype=p.dtype)
        block = _block(hp)
        _mlp_fwd, _ = _kernels()
        _mlp_fwd[(_cdiv(n, block),)](
            p, w1, b1, w2, out, n, k_in, hid, k_out,
            KP=kp, HP=hp, OP=op, BLOCK=block, PREC=_precision(),
        )  # fmt: skip
        ctx.save_for_backward(p, w1, b1, w2)
        return out

    @staticmethod
    def backward(ctx: Any, g: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        p, w1, b1, w2 = ctx.saved_tensors
        g = g.contiguous()
        n, k_in, hid, k_out, kp, hp, op = _sizes(p, w1, w2)
        block = _block(hp)
        tiles = _cdiv(n, block)
        programs = _programs(p.device, tiles)
        gp = torch.empty_like(p)
        gw1 = torch.empty(programs, kp, hp, device=p.device, dtype=torch.float32)
        gw2 = torch.empty(programs, hp, op, device=p.device, dtype=torch.float32)
        gb1 = torch.empty(programs, hp, device=p.device, dtype=torch.float32)
        _, _mlp_bwd = _kernels()
        _mlp_bwd[(programs,)](
            p, w1, b1, w2, g, gp, gw1, gb1, gw2, n, k_in, hid, k_out, tiles,
            KP=kp, HP=hp, OP=op, BLOCK=block, PREC=_precision(),
        )  # fmt: skip
        grad_w1 = gw1.sum(0)[:k_in, :hid].t().to(p.dtype)
        grad_w2 = gw2.sum(0)[:hid, :k_out].t().to(p.dtype)
        return gp, grad_w1, gb1.sum(0)[:hid].to(p.dtype), grad_w2


def fused_mlp(p: Tensor, w1: Tensor, b1: Tensor, w2: Tensor) -> Tensor:
    """``relu(p @ w1.T + b1) @ w2.T`` for p (N, K_in), w1 (H, K_in), b1 (H,), w2 (K_out, H),
    differentiable in all four, without storing the hidden layer."""
    if not available(p.device):
        raise RuntimeError(
            "the fused NCA kernels need triton and a CUDA device (or TRITON_INTERPRET=1 "
            f"on CPU); got a {p.device.type} tensor"
            + ("" if importlib.util.find_spec("triton") else " and no triton installed")
        )
    out: Tensor = _FusedMLP.apply(p, w1, b1, w2)
    return out
