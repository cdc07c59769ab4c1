"""Triton kernels of :mod:`ncaflow.fused` (imported only when they are first used).

Shapes, all row-major: P (N, K_IN) perception rows, W1 (HID, K_IN), B1 (HID,),
W2 (K_OUT, HID), OUT and G (N, K_OUT). KP, HP, OP are K_IN, HID, K_OUT padded to
powers of two (masked loads fill the padding with zeros, which changes nothing).

With STENCIL the kernels compute the perception rows themselves from the padded state
SP (B, H+2, W+2, C), channels last, and FILT (NF, 9), the 3 x 3 weights of NF fixed
filters: column c * NF + j of a row is channel c of cell (b, y, x) seen through
filter j. In registers a row is padded to KP = SLOTS * CP (NF and C padded to powers
of two), entry f = c * SLOTS + j; without STENCIL, SLOTS = NF = 1 and C = K_IN, so
entry f is column f.
"""

import triton
import triton.language as tl


@triton.jit
def column(f, C, NF, SLOTS: tl.constexpr):
    """W1's column of padded row entry f, and whether there is one."""
    c = f // SLOTS
    j = f % SLOTS
    return c * NF + j, (j < NF) & (c < C)


@triton.jit
def load_weights(
    W1, B1, W2, C, NF, HID, K_OUT,
    SLOTS: tl.constexpr, KP: tl.constexpr, HP: tl.constexpr, OP: tl.constexpr,
):  # fmt: skip
    """W1 (HID, K_IN) and W2 (K_OUT, HID) as stored, loaded transposed: (KP, HP), (HP, OP),
    W1's rows in padded entry order; and B1 (HP,)."""
    f = tl.arange(0, KP)
    hid = tl.arange(0, HP)
    out = tl.arange(0, OP)
    col, valid = column(f, C, NF, SLOTS)
    w1t = tl.load(
        W1 + hid[None, :] * (C * NF) + col[:, None],
        mask=valid[:, None] & (hid[None, :] < HID),
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
def perception(
    P, SP, FILT, rows, N, H, W, C, NF,
    SLOTS: tl.constexpr, KP: tl.constexpr, BLOCK: tl.constexpr, STENCIL: tl.constexpr,
):  # fmt: skip
    """The perception rows of cells ``rows`` (flat indices into B x H x W), (BLOCK, KP):
    loaded from P, or with STENCIL made from SP (:func:`stencil`)."""
    if STENCIL:
        p = stencil(SP, FILT, rows, N, H, W, C, NF, SLOTS, KP, BLOCK)
    else:
        f = tl.arange(0, KP)
        _, valid = column(f, C, NF, SLOTS)
        mask = (rows[:, None] < N) & valid[None, :]
        p = tl.load(P + rows[:, None] * (C * NF) + f[None, :], mask=mask, other=0.0)
    return p


@triton.jit
def stencil(
    SP, FILT, rows, N, H, W, C, NF,
    SLOTS: tl.constexpr, KP: tl.constexpr, BLOCK: tl.constexpr,
):  # fmt: skip
    """The fixed filters of SP at cells ``rows``, (BLOCK, KP) in padded entry order: each of
    a cell's nine neighbours is loaded once and added to every filter with its weight."""
    CP: tl.constexpr = KP // SLOTS
    b = rows // (H * W)
    y = rows % (H * W) // W
    x = rows % W
    corner = ((b * (H + 2) + y) * (W + 2) + x) * C  # the top-left neighbour in SP
    ch = tl.arange(0, CP)
    mask = (rows[:, None] < N) & (ch[None, :] < C)
    p0 = tl.zeros((BLOCK, CP), dtype=tl.float32)
    p1 = tl.zeros((BLOCK, CP), dtype=tl.float32)
    p2 = tl.zeros((BLOCK, CP), dtype=tl.float32)
    p3 = tl.zeros((BLOCK, CP), dtype=tl.float32)
    for o in tl.static_range(9):
        offset = ((o // 3) * (W + 2) + o % 3) * C
        v = tl.load(SP + corner[:, None] + offset + ch[None, :], mask=mask, other=0.0)
        p0 += tl.load(FILT + o) * v
        if SLOTS > 1:
            p1 += tl.load(FILT + 9 + o, mask=NF > 1, other=0.0) * v
        if SLOTS > 2:
            p2 += tl.load(FILT + 18 + o, mask=NF > 2, other=0.0) * v
            p3 += tl.load(FILT + 27 + o, mask=NF > 3, other=0.0) * v
    p = p0
    if SLOTS == 2:  # entry c * 2 + j is filter j of channel c
        p = tl.reshape(tl.join(p0, p1), (BLOCK, KP))
    if SLOTS == 4:  # join's last axis varies fastest: entry c * 4 + 2 * i + k is p[2i + k]
        p = tl.reshape(tl.join(tl.join(p0, p2), tl.join(p1, p3)), (BLOCK, KP))
    return p


@triton.jit
def mlp_fwd(
    P, SP, FILT, W1, B1, W2, OUT, N, H, W, C, NF, HID, K_OUT,
    SLOTS: tl.constexpr, KP: tl.constexpr, HP: tl.constexpr, OP: tl.constexpr,
    BLOCK: tl.constexpr, PREC: tl.constexpr, STENCIL: tl.constexpr,
):  # fmt: skip
    """OUT = relu(P @ W1.T + B1) @ W2.T for BLOCK rows per program."""
    w1t, b1, w2t = load_weights(W1, B1, W2, C, NF, HID, K_OUT, SLOTS, KP, HP, OP)
    rows = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    p = perception(P, SP, FILT, rows, N, H, W, C, NF, SLOTS, KP, BLOCK, STENCIL)
    h = tl.maximum(tl.dot(p, w1t, input_precision=PREC) + b1[None, :], 0.0)  # (BLOCK, HP)
    y = tl.dot(h, w2t, input_precision=PREC)
    out = tl.arange(0, OP)
    live = rows[:, None] < N
    tl.store(OUT + rows[:, None] * K_OUT + out[None, :], y, mask=live & (out[None, :] < K_OUT))


@triton.jit
def mlp_bwd(
    P, SP, FILT, W1, B1, W2, G, GP, PART, N, H, W, C, NF, HID, K_OUT, TILES,
    SLOTS: tl.constexpr, KP: tl.constexpr, HP: tl.constexpr, OP: tl.constexpr,
    BLOCK: tl.constexpr, PREC: tl.constexpr, STENCIL: tl.constexpr,
):  # fmt: skip
    """GP = dL/dP (N, K_IN), and this program's partial sums of the weight gradients in
    PART[pid].

    A persistent grid: program pid owns row tiles pid, pid + programs, ... and recomputes
    their perception (with STENCIL) and hidden layer (never stored). PART[pid] holds dW1.T
    (KP, HP) in padded entry order, then dW2.T (HP, OP), then dB1 (HP,), summed over its
    tiles; sum_partials adds the programs up.
    """
    w1t, b1, w2t = load_weights(W1, B1, W2, C, NF, HID, K_OUT, SLOTS, KP, HP, OP)
    pid = tl.program_id(0)
    programs = tl.num_programs(0)
    f = tl.arange(0, KP)
    hid = tl.arange(0, HP)
    out = tl.arange(0, OP)
    col, valid = column(f, C, NF, SLOTS)
    gw1 = tl.zeros((KP, HP), dtype=tl.float32)
    gw2 = tl.zeros((HP, OP), dtype=tl.float32)
    gb1 = tl.zeros((HP,), dtype=tl.float32)
    for tile in range(pid, TILES, programs):
        rows = tile * BLOCK + tl.arange(0, BLOCK)
        live = rows[:, None] < N
        p = perception(P, SP, FILT, rows, N, H, W, C, NF, SLOTS, KP, BLOCK, STENCIL)
        g = tl.load(
            G + rows[:, None] * K_OUT + out[None, :],
            mask=live & (out[None, :] < K_OUT),
            other=0.0,
        )
        pre = tl.dot(p, w1t, input_precision=PREC) + b1[None, :]  # (BLOCK, HP)
        h = tl.maximum(pre, 0.0)
        gh = tl.where(pre > 0.0, tl.dot(g, tl.trans(w2t), input_precision=PREC), 0.0)
        gp = tl.dot(gh, tl.trans(w1t), input_precision=PREC)  # (BLOCK, KP)
        tl.store(GP + rows[:, None] * (C * NF) + col[None, :], gp, mask=live & valid[None, :])
        gw1 += tl.dot(tl.trans(p), gh, input_precision=PREC)
        gw2 += tl.dot(tl.trans(h), g, input_precision=PREC)
        gb1 += tl.sum(gh, axis=0)
    part = PART + pid * (KP * HP + HP * OP + HP)
    tl.store(part + f[:, None] * HP + hid[None, :], gw1)
    tl.store(part + KP * HP + hid[:, None] * OP + out[None, :], gw2)
    tl.store(part + KP * HP + HP * OP + hid, gb1)


@triton.jit
def sum_partials(
    PART, GW1, GW2, GB1, PROGRAMS, C, NF, HID, K_OUT,
    SLOTS: tl.constexpr, KP: tl.constexpr, HP: tl.constexpr, OP: tl.constexpr,
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
    # dW1.T (KP, HP) entry i = f * HP + h is dW1[h, column(f)]
    col, valid = column(i // HP, C, NF, SLOTS)
    h = i % HP
    tl.store(GW1 + h * (C * NF) + col, acc, mask=(i < KP * HP) & valid & (h < HID))
    # dW2.T (HP, OP) entry j = h * OP + o is dW2[o, h]
    j = i - KP * HP
    h2, o = j // OP, j % OP
    tl.store(GW2 + o * HID + h2, acc, mask=(j >= 0) & (j < HP * OP) & (h2 < HID) & (o < K_OUT))
    b = j - HP * OP
    tl.store(GB1 + b, acc, mask=(b >= 0) & (b < HID))
