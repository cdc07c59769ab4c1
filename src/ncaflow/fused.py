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
a CUDA device; with ``TRITON_INTERPRET=1`` (set before this module is imported)
Triton's interpreter runs them on CPU tensors, which is how the tests check them
where there is no GPU. Matrix products use TF32 on the GPU
(``NCAFLOW_FUSED_PRECISION=ieee`` for full fp32): the same precision PyTorch
gives cuDNN's 1x1 convolutions by default.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import Tensor

try:
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - exercised where triton is absent
    triton = None

__all__ = ["available", "fused_mlp"]


def available(device: torch.device | str) -> bool:
    """Whether the fused kernels can run on tensors of this device."""
    if triton is None:
        return False
    kind = torch.device(device).type
    return kind == "cpu" if os.environ.get("TRITON_INTERPRET") == "1" else kind == "cuda"


def _precision() -> str:
    return os.environ.get("NCAFLOW_FUSED_PRECISION", "tf32")


def _pow2(n: int) -> int:
    return max(16, triton.next_power_of_2(n))


def _programs(device: torch.device, tiles: int) -> int:
    """Persistent grid size: a few programs per SM, never more than there are tiles."""
    if device.type == "cuda":
        sms = torch.cuda.get_device_properties(device).multi_processor_count
        return max(1, min(tiles, 4 * sms))
    return max(1, min(tiles, 4))


if triton is not None:

    @triton.jit
    def _load_weights(
        W1T, B1, W2T, K_IN, HID, K_OUT, KP: tl.constexpr, HP: tl.constexpr, OP: tl.constexpr
    ):
        kin = tl.arange(0, KP)
        hid = tl.arange(0, HP)
        out = tl.arange(0, OP)
        w1t = tl.load(
            W1T + kin[:, None] * HID + hid[None, :],
            mask=(kin[:, None] < K_IN) & (hid[None, :] < HID),
            other=0.0,
        )
        b1 = tl.load(B1 + hid, mask=hid < HID, other=0.0)
        w2t = tl.load(
            W2T + hid[:, None] * K_OUT + out[None, :],
            mask=(hid[:, None] < HID) & (out[None, :] < K_OUT),
            other=0.0,
        )
        return w1t, b1, w2t

    @triton.jit
    def _mlp_fwd(
        P, W1T, B1, W2T, OUT, N, K_IN, HID, K_OUT,
        KP: tl.constexpr, HP: tl.constexpr, OP: tl.constexpr,
        BLOCK: tl.constexpr, PREC: tl.constexpr,
    ):  # fmt: skip
        w1t, b1, w2t = _load_weights(W1T, B1, W2T, K_IN, HID, K_OUT, KP, HP, OP)
        rows = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        kin = tl.arange(0, KP)
        out = tl.arange(0, OP)
        p = tl.load(
            P + rows[:, None] * K_IN + kin[None, :],
            mask=(rows[:, None] < N) & (kin[None, :] < K_IN),
            other=0.0,
        )
        h = tl.maximum(tl.dot(p, w1t, input_precision=PREC) + b1[None, :], 0.0)
        y = tl.dot(h, w2t, input_precision=PREC)
        tl.store(
            OUT + rows[:, None] * K_OUT + out[None, :],
            y,
            mask=(rows[:, None] < N) & (out[None, :] < K_OUT),
        )

    @triton.jit
    def _mlp_bwd(
        P, W1T, B1, W2T, G, GP, GW1, GB1, GW2, N, K_IN, HID, K_OUT, TILES,
        KP: tl.constexpr, HP: tl.constexpr, OP: tl.constexpr,
        BLOCK: tl.constexpr, PREC: tl.constexpr,
    ):  # fmt: skip
        w1t, b1, w2t = _load_weights(W1T, B1, W2T, K_IN, HID, K_OUT, KP, HP, OP)
        pid = tl.program_id(0)
        programs = tl.num_programs(0)
        kin = tl.arange(0, KP)
        hid = tl.arange(0, HP)
        out = tl.arange(0, OP)
        gw1 = tl.zeros((KP, HP), dtype=tl.float32)
        gw2 = tl.zeros((HP, OP), dtype=tl.float32)
        gb1 = tl.zeros((HP,), dtype=tl.float32)
        for tile in range(pid, TILES, programs):
            rows = tile * BLOCK + tl.arange(0, BLOCK)
            live = rows[:, None] < N
            in_mask = live & (kin[None, :] < K_IN)
            p = tl.load(P + rows[:, None] * K_IN + kin[None, :], mask=in_mask, other=0.0)
            g = tl.load(
                G + rows[:, None] * K_OUT + out[None, :],
                mask=live & (out[None, :] < K_OUT),
                other=0.0,
            )
            pre = tl.dot(p, w1t, input_precision=PREC) + b1[None, :]
            h = tl.maximum(pre, 0.0)
            gh = tl.where(pre > 0.0, tl.dot(g, tl.trans(w2t), input_precision=PREC), 0.0)
            gp = tl.dot(gh, tl.trans(w1t), input_precision=PREC)
            tl.store(GP + rows[:, None] * K_IN + kin[None, :], gp, mask=in_mask)
            gw1 += tl.dot(tl.trans(p), gh, input_precision=PREC)
            gw2 += tl.dot(tl.trans(h), g, input_precision=PREC)
            gb1 += tl.sum(gh, axis=0)
        tl.store(GW1 + pid * KP * HP + kin[:, None] * HP + hid[None, :], gw1)
        tl.store(GW2 + pid * HP * OP + hid[:, None] * OP + out[None, :], gw2)
        tl.store(GB1 + pid * HP + hid, gb1)


def _sizes(p: Tensor, w1: Tensor, w2: Tensor) -> tuple[int, int, int, int, int, int, int]:
    n, k_in = p.shape
    hid, k_out = w1.shape[0], w2.shape[0]
    return n, k_in, hid, k_out, _pow2(k_in), _pow2(hid), _pow2(k_out)


def _block(hp: int) -> int:
    return 64 if hp <= 128 else 32  # keep the hidden tile (BLOCK x HP floats) in registers


class _FusedMLP(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, p: Tensor, w1: Tensor, b1: Tensor, w2: Tensor) -> Tensor:
        p = p.contiguous()
        w1t, w2t = w1.t().contiguous(), w2.t().contiguous()
        n, k_in, hid, k_out, kp, hp, op = _sizes(p, w1, w2)
        out = torch.empty(n, k_out, device=p.device, dtype=p.dtype)
        block = _block(hp)
        _mlp_fwd[(triton.cdiv(n, block),)](
            p, w1t, b1, w2t, out, n, k_in, hid, k_out,
            KP=kp, HP=hp, OP=op, BLOCK=block, PREC=_precision(),
        )  # fmt: skip
        ctx.save_for_backward(p, w1t, b1, w2t)
        return out

    @staticmethod
    def backward(ctx: Any, g: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        p, w1t, b1, w2t = ctx.saved_tensors
        g = g.contiguous()
        n, k_in, hid, k_out, kp, hp, op = _sizes(p, w1t.t(), w2t.t())
        block = _block(hp)
        tiles = triton.cdiv(n, block)
        programs = _programs(p.device, tiles)
        gp = torch.empty_like(p)
        gw1 = torch.empty(programs, kp, hp, device=p.device, dtype=torch.float32)
        gw2 = torch.empty(programs, hp, op, device=p.device, dtype=torch.float32)
        gb1 = torch.empty(programs, hp, device=p.device, dtype=torch.float32)
        _mlp_bwd[(programs,)](
            p, w1t, b1, w2t, g, gp, gw1, gb1, gw2, n, k_in, hid, k_out, tiles,
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
            + ("" if triton is not None else " and no triton installed")
        )
    out: Tensor = _FusedMLP.apply(p, w1, b1, w2)
    return out
