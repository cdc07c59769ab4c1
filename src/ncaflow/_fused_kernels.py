"""Triton kernels of :mod:`ncaflow.fused` (imported only when they are first used)."""

import triton
import triton.language as tl


@triton.jit
def load_weights(
    W1, B1, W2, K_IN, HID, K_OUT, KP: tl.constexpr, HP: tl.constexpr, OP: tl.constexpr
):
    """W1 (HID, K_IN) and W2 (K_OUT, HID) as stored, loaded transposed: (KP, HP), (HP, OP)."""
    kin = tl.arange(0, KP)
    hid = tl.arange(0, HP)
    out = tl.arange(0, OP)
    w1t = tl.load(
        W1 + hid[None, :] * K_IN + kin[:, None],
        mask=(kin[:, None] < K_IN) & (hid[None, :] < HID),
        other=0.0,
    )
    b1 = tl.load(B1 + hid, mask=hid < HID, other=0.0)
    w2t = tl.load(
        W2 + out[None, :] * HID + hid[:, None],
        mask=(hid[:, None] < HID) & (out[None, :] < K_OUT),
        other=0.0,
    )
    return w1t, b1, w2t


@triton.jit
def mlp_fwd(
    P, W1, B1, W2, OUT, N, K_IN, HID, K_OUT,
    KP: tl.constexpr, HP: tl.constexpr, OP: tl.constexpr,
    BLOCK: tl.constexpr, PREC: tl.constexpr,
):  # fmt: skip
    w1t, b1, w2t = load_weights(W1, B1, W2, K_IN, HID, K_OUT, KP, HP, OP)
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
def mlp_bwd(
    P, W1, B1, W2, G, GP, GW1, GB1, GW2, N, K_IN, HID, K_OUT, TILES,
    KP: tl.constexpr, HP: tl.constexpr, OP: tl.constexpr,
    BLOCK: tl.constexpr, PREC: tl.constexpr,
):  # fmt: skip
    w1t, b1, w2t = load_weights(W1, B1, W2, K_IN, HID, K_OUT, KP, HP, OP)
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
