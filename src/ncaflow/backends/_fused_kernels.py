"""Triton kernels of :mod:`ncaflow.backends.fused` (imported only when they are first used).

Shapes, all row-major: P (N, K_IN) perception rows, W1 (HID, K_IN), B1 (HID,),
W2 (K_OUT, HID), OUT and G (N, K_OUT). KP, HP, OP are K_IN, HID, K_OUT padded to
powers of two (masked loads fill the padding with zeros, which changes nothing).

With GATHER, the MLP runs only on the rows that matter (:func:`row_order`): ORDER (N,)
lists them first (COUNT = POS[N - 1] of them, POS being their running count), then the
others, whose outputs and gradients are zero. Tiles of ORDER then gather their rows;
without GATHER, ORDER is the identity and COUNT = N.
"""

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
def row_order(KEEP, POS, ORDER, N, BLOCK: tl.constexpr):
    """ORDER: the rows with KEEP != 0 first, in order, then the others. POS is the inclusive
    running count of kept rows (a cumulative sum of KEEP), so POS[N - 1] of them are kept."""
    r = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    inside = r < N
    kept = tl.load(KEEP + r, mask=inside, other=0) != 0
    pos = tl.load(POS + r, mask=inside, other=0)
    count = tl.load(POS + N - 1)
    tl.store(ORDER + tl.where(kept, pos - 1, count + r - pos), r, mask=inside)


@triton.jit
def tile_rows(ORDER, tile, N, BLOCK: tl.constexpr, GATHER: tl.constexpr):
    """The rows of one tile of ORDER (the identity without GATHER) and which exist."""
    at = tile * BLOCK + tl.arange(0, BLOCK)
    if GATHER:
        return tl.load(ORDER + at, mask=at < N, other=0), at
    return at, at


@triton.jit
def row_count(POS, N, GATHER: tl.constexpr):
    """How many rows the MLP runs on: the kept ones (POS[N - 1]), or all N."""
    if GATHER:
        return tl.load(POS + N - 1)
    return N


@triton.jit
def mlp_fwd(
    P, W1, B1, W2, OUT, ORDER, POS, N, K_IN, HID, K_OUT,
    KP: tl.constexpr, HP: tl.constexpr, OP: tl.constexpr,
    BLOCK: tl.constexpr, PREC: tl.constexpr, GATHER: tl.constexpr,
):  # fmt: skip
    """OUT = relu(P @ W1.T + B1) @ W2.T for BLOCK rows per program; zeros for the rows
    beyond the kept ones (with GATHER)."""
    rows, at = tile_rows(ORDER, tl.program_id(0), N, BLOCK, GATHER)
    count = row_count(POS, N, GATHER)
    out = tl.arange(0, OP)
    store_mask = (at[:, None] < N) & (out[None, :] < K_OUT)
    if tl.program_id(0) * BLOCK < count:
        w1t, b1, w2t = load_weights(W1, B1, W2, K_IN, HID, K_OUT, KP, HP, OP)
        kin = tl.arange(0, KP)
        live = at[:, None] < count
        p = tl.load(
            P + rows[:, None] * K_IN + kin[None, :], mask=live & (kin[None, :] < K_IN), other=0.0
        )
        h = tl.maximum(tl.dot(p, w1t, input_precision=PREC) + b1[None, :], 0.0)  # (BLOCK, HP)
        y = tl.where(live, tl.dot(h, w2t, input_precision=PREC), 0.0)
        tl.store(OUT + rows[:, None] * K_OUT + out[None, :], y, mask=store_mask)
    else:
        zero = tl.zeros((BLOCK, OP), dtype=tl.float32)
        tl.store(OUT + rows[:, None] * K_OUT + out[None, :], zero, mask=store_mask)


@triton.jit
def mlp_bwd(
    P, W1, B1, W2, G, G_STRIDE, GP, PART, ORDER, POS, N, K_IN, HID, K_OUT, TILES,
    KP: tl.constexpr, HP: tl.constexpr, OP: tl.constexpr,
    BLOCK: tl.constexpr, PREC: tl.constexpr, GATHER: tl.constexpr,
):  # fmt: skip
    """GP = dL/dP, and this program's partial sums of the weight gradients in PART[pid].
    Row r of G starts at G + r * G_STRIDE (a view of a wider gradient needs no copy).

    A persistent grid: program pid owns row tiles pid, pid + programs, ... of the first
    COUNT rows and recomputes their hidden layer (never stored), then writes zeros to GP in
    its tiles of the rest. PART[pid] holds dW1.T (KP, HP), then dW2.T (HP, OP), then dB1
    (HP,), summed over its tiles; sum_partials adds the programs up.
    """
    w1t, b1, w2t = load_weights(W1, B1, W2, K_IN, HID, K_OUT, KP, HP, OP)
    pid = tl.program_id(0)
    programs = tl.num_programs(0)
    kin = tl.arange(0, KP)
    hid = tl.arange(0, HP)
    out = tl.arange(0, OP)
    gw1 = tl.zeros((KP, HP), dtype=tl.float32)
    gw2 = tl.zeros((HP, OP), dtype=tl.float32)
    gb1 = tl.zeros((HP,), dtype=tl.float32)
    count = row_count(POS, N, GATHER)
    busy = tl.cdiv(count, BLOCK)  # the tiles holding rows to compute
    for tile in range(pid, busy, programs):
        rows, at = tile_rows(ORDER, tile, N, BLOCK, GATHER)
        in_mask = (at[:, None] < N) & (kin[None, :] < K_IN)
        p = tl.load(P + rows[:, None] * K_IN + kin[None, :], mask=in_mask, other=0.0)
        live = at[:, None] < count  # g = 0 beyond: their gp and weight gradients are 0
        g = tl.load(
            G + rows[:, None] * G_STRIDE + out[None, :],
            mask=live & (out[None, :] < K_OUT),
            other=0.0,
        )
        pre = tl.dot(p, w1t, input_precision=PREC) + b1[None, :]  # (BLOCK, HP)
        h = tl.maximum(pre, 0.0)
        gh = tl.where(pre > 0.0, tl.dot(g, tl.trans(w2t), input_precision=PREC), 0.0)
        gp = tl.dot(gh, tl.trans(w1t), input_precision=PREC)  # (BLOCK, KP)
        tl.store(GP + rows[:, None] * K_IN + kin[None, :], gp, mask=in_mask)
        gw1 += tl.dot(tl.trans(p), gh, input_precision=PREC)
        gw2 += tl.dot(tl.trans(h), g, input_precision=PREC)
        gb1 += tl.sum(gh, axis=0)
    for tile in range(busy + pid, TILES, programs):  # only with GATHER: the rows left out
        rows, at = tile_rows(ORDER, tile, N, BLOCK, GATHER)
        zero = tl.zeros((BLOCK, KP), dtype=tl.float32)
        tl.store(
            GP + rows[:, None] * K_IN + kin[None, :],
            zero,
            mask=(at[:, None] < N) & (kin[None, :] < K_IN),
        )
    part = PART + pid * (KP * HP + HP * OP + HP)
    tl.store(part + kin[:, None] * HP + hid[None, :], gw1)
    tl.store(part + KP * HP + hid[:, None] * OP + out[None, :], gw2)
    tl.store(part + KP * HP + HP * OP + hid, gb1)


@triton.jit
def sum_partials(
    PART, GW1, GW2, GB1, PROGRAMS, K_IN, HID, K_OUT,
    KP: tl.constexpr, HP: tl.constexpr, OP: tl.constexpr,
    BLOCK: tl.constexpr, ROWS: tl.constexpr,
):  # fmt: skip
    """Add up mlp_bwd's PROGRAMS partial sums and write the weight gradients in the weights'
    own layouts: GW1 (HID, K_IN), GW2 (K_OUT, HID), GB1 (HID,). One kernel instead of a
    reduction and two transposing copies. Program pid sums entries pid * BLOCK + [0, BLOCK)
    of every partial, ROWS partials per load."""
    width = KP * HP + HP * OP + HP
    i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    acc = tl.zeros((BLOCK,), dtype=tl.float32)
    for first in range(0, PROGRAMS, ROWS):
        rows = first + tl.arange(0, ROWS)
        tile = tl.load(
            PART + rows[:, None] * width + i[None, :],
            mask=(rows[:, None] < PROGRAMS) & (i[None, :] < width),
            other=0.0,
        )
        acc += tl.sum(tile, axis=0)
    # dW1.T (KP, HP) entry i = k * HP + h is dW1[h, k]
    k, h = i // HP, i % HP
    tl.store(GW1 + h * K_IN + k, acc, mask=(i < KP * HP) & (k < K_IN) & (h < HID))
    # dW2.T (HP, OP) entry j = h * OP + o is dW2[o, h]
    j = i - KP * HP
    h2, o = j // OP, j % OP
    tl.store(GW2 + o * HID + h2, acc, mask=(j >= 0) & (j < HP * OP) & (h2 < HID) & (o < K_OUT))
    b = j - HP * OP
    tl.store(GB1 + b, acc, mask=(b >= 0) & (b < HID))
