"""The fast NCA rollout: the reference step of :mod:`ncaflow.model.nca`, laid out for GEMMs.

The state lives channels-last, ``(B, H, W, C)``, so that every cell is one row of
an ``(N, C)`` matrix (``N = B*H*W``). One step::

    xp = pad(x)                         (B, H+2r, W+2r, C)  padding mode honoured
    P  = [perceive(xp) | 1]             (N, K*C + 1)  shifted slices, column j*C + c
    h  = relu(P @ W1a.T)                (N, hidden)   W1a = [fc1 reordered | bias]
    dx = (h @ W2.T) * fire              (N, C_upd)
    y  = (x[..., input:] + dx) * life   life = alive(x) & alive(y), as in the reference

On CPU the GEMMs see only the rows whose update can matter (cells that fire and
lie within two cells of an alive one: the rest are multiplied by zero or masked
dead anyway, so the result is the same), whose perception rows are computed alone from
their neighbours (:func:`perceive_rows`), in row tiles small enough that a tile
of ``h`` stays in cache. Every temporary lives in a :class:`Workspace` allocated
once per rollout (fresh large allocations cost a page fault per 4 KiB on CPU).

:class:`StepFn` is a hand-written autograd step that saves only the input state,
the fire mask and the (B, H, W, 1) life mask; its backward recomputes the rest.
Every op is plain PyTorch, so the path runs on any device.
"""

from __future__ import annotations

import functools
import operator
import os
import shutil
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import FunctionCtx

__all__ = [
    "COMPILE_MIN_CELLS",
    "GPU_TILE_ROWS",
    "TILE_ROWS",
    "Plan",
    "StepFn",
    "Workspace",
    "step_cl",
]

TILE_ROWS = 4096  # rows per GEMM tile on CPU: a (4096, 128) fp32 tile is 2 MiB, one L2
GPU_TILE_ROWS = 1 << 18  # 128 MiB of hidden activations per tile at width 128
# NCAFLOW_COMPILE=auto compiles perception from this many cells a step up: the main job's
# cells (4 x 36 x 36 to 16 x 28 x 28) train 1.1-1.6x faster per iteration compiled, for a
# few seconds of compiling per process (benchmarks/README.md)
COMPILE_MIN_CELLS = 4096

Tap = tuple[int, int, float]  # (dy, dx, weight) inside the k x k window
Taps = tuple[tuple[Tap, ...], ...]  # per fixed filter, its non-zero taps


@dataclass(frozen=True)
class Plan:
    """What a step needs to know besides tensors (built once per model).

    taps: per fixed filter, its non-zero taps; ``None`` for learned filters,
    whose weights come as a ``(K, k, k, C)`` tensor instead.
    """

    input_channels: int
    n_filters: int
    radius: int
    padding: str
    alive_channel: int | None
    alive_threshold: float
    taps: Taps | None


def pad_index(n: int, r: int, mode: str, device: torch.device) -> Tensor:
    """Source index of every padded position ``-r .. n+r-1`` for reflect/replicate/circular."""
    i = torch.arange(-r, n + r, device=device)
    if mode == "circular":
        return i.remainder(n)
    if mode == "replicate":
        return i.clamp(0, n - 1)
    if mode == "reflect":
        if r >= n:
            raise ValueError(
                f"key 'model.padding': reflect padding of {r} cells needs a grid larger than "
                f"{n} cells a side (data.size, or a cascade's coarsest scale); use a larger "
                "data.size, smaller cascade.scales or model.padding: zeros"
            )
        i = i.abs()
        return torch.where(i > n - 1, 2 * (n - 1) - i, i)
    raise ValueError(f"unknown padding {mode!r}")


class Workspace:
    """Scratch tensors for one rollout of (B, H, W, C) states; reused by every step
    (lazily-touched pages of unused rows cost nothing).

    Nothing in here is returned or saved for backward, so steps may overwrite it.
    """

    def __init__(self, plan: Plan, x: Tensor, hidden: int) -> None:
        b, h, w, c = x.shape
        r, k = plan.radius, plan.n_filters
        self.plan, self.shape, self.n = plan, (b, h, w, c), b * h * w
        cpu = x.device.type == "cpu"
        self.tile = TILE_ROWS if cpu else GPU_TILE_ROWS  # GPUs: few launches, bounded memory
        self.sparse = cpu  # skip inactive rows (nonzero() would synchronise a GPU)
        self.compiled = _want_compile(plan, self.n, cpu)
        new = x.new_empty
        self.xp = new(b, h + 2 * r, w + 2 * r, c)
        self.rows = self.cols = self.half = None
        if plan.padding == "zeros":
            self.xp.zero_()  # the border stays zero; steps write the interior
        elif r > 0:
            self.rows = pad_index(h, r, plan.padding, x.device)
            self.cols = pad_index(w, r, plan.padding, x.device)
            self.half = new(b, h, w + 2 * r, c)
        self.p = new(self.n, k * c + 1)  # perception | 1 (the bias column)
        self.p[:, -1] = 1.0
        self.p5 = self.p.view(b, h, w, k * c + 1)[..., : k * c].view(b, h, w, k, c)
        self.dx = new(self.n, c - plan.input_channels)
        rows = self.n if self.sparse else 0  # rows gathered for the GEMMs (sparse steps)
        self.pa = new(rows, k * c + 1)
        self.pa[:, -1] = 1.0
        # for perceive_rows: each cell's row in the flattened padded state, and the offsets
        # of its k x k window (row-major) from there
        self.centre = self.window = None
        if self.sparse:
            padded = torch.arange(self.xp.numel() // c, device=x.device).view(self.xp.shape[:3])
            self.centre = padded[:, r : r + h, r : r + w].reshape(-1)
            self.window = (padded[0, : 2 * r + 1, : 2 * r + 1] - padded[0, r, r]).reshape(-1)
        self.dxa = new(rows, c - plan.input_channels)
        self.gpa = new(rows, k * c)
        m = min(self.tile, self.n)
        self.h = new(m, hidden)
        self.gh = new(m, hidden)
        self._gp: Tensor | None = None
        self._gxp: Tensor | None = None

    def grad_buffers(self) -> tuple[Tensor, Tensor]:
        """(gp (N, K*C), gxp (B, H+2r, W+2r, C)), allocated on first use (backward only)."""
        if self._gp is None or self._gxp is None:
            self._gp = self.p.new_empty(self.n, self.p.shape[1] - 1)
            self._gxp = torch.empty_like(self.xp)
        return self._gp, self._gxp

    def pad(self, x: Tensor) -> Tensor:
        """(B, H, W, C) -> (B, H+2r, W+2r, C) in ``self.xp``."""
        r = self.plan.radius
        _, h, w, _ = self.shape
        if r == 0:
            self.xp.copy_(x)
        elif self.rows is None:
            self.xp[:, r : r + h, r : r + w] = x
        else:
            assert self.cols is not None and self.half is not None
            torch.index_select(x, 2, self.cols, out=self.half)
            torch.index_select(self.half, 1, self.rows, out=self.xp)
        return self.xp

    def unpad(self, gxp: Tensor) -> Tensor:
        """Adjoint of :meth:`pad`: a fresh (B, H, W, C), border gradients folded back."""
        r = self.plan.radius
        b, h, w, c = self.shape
        if self.rows is None:
            return gxp[:, r : r + h, r : r + w].contiguous()
        assert self.cols is not None
        t = gxp.new_zeros(b, h, w + 2 * r, c).index_add_(1, self.rows, gxp)
        return gxp.new_zeros(b, h, w, c).index_add_(2, self.cols, t)


def perceive(ws: Workspace, xp: Tensor, kern: Tensor | None) -> Tensor:
    """Padded state -> ``ws.p`` (N, K*C + 1), perception in its first K*C columns.

    kern: (K, k, k, C) per-channel filters (learned perception) or None (fixed taps).
    """
    plan, p = ws.plan, ws.p5  # p: (B, H, W, K, C) view into ws.p
    b, h, w, _ = ws.shape
    if not (ws.compiled and _run_compiled(ws, "perceive", xp, ws.p.view(b, h, w, -1))):
        _perceive_eager(p, plan, kern, _shifted(xp, h, w))
    return ws.p


def perceive_rows(ws: Workspace, xp: Tensor, idx: Tensor, kern: Tensor | None) -> Tensor:
    """The perception of the cells ``idx`` only: ``perceive(ws, xp, kern)[idx]`` in
    ``ws.pa[:M]`` (M, K*C + 1), from each cell's k x k neighbours in the padded state,
    without computing (and writing) the rows that sparse steps skip."""
    plan, (_, _, _, c) = ws.plan, ws.shape
    assert ws.centre is not None and ws.window is not None
    m = idx.numel()
    rows = ws.pa[:m]
    p5 = rows[:, :-1].view(m, plan.n_filters, c)  # the last column stays 1 (the bias)
    q = ws.centre[idx]
    xpf = xp.view(-1, c)
    if not (ws.compiled and _run_compiled(ws, "rows", xpf, q, *p5.unbind(1))):
        k = 2 * plan.radius + 1  # one gather of every window: 2-4x faster than one per tap
        nb = xpf.index_select(0, (q[:, None] + ws.window).view(-1)).view(m, k * k, c)
        _perceive_eager(p5, plan, kern, lambda dy, dx: nb[:, dy * k + dx])
    return rows


Shift = Callable[[int, int], Tensor]  # (dy, dx) in the k x k window -> the state moved by it


def _shifted(xp: Tensor, h: int, w: int) -> Shift:
    """Window offsets of a padded (B, H+2r, W+2r, C) state as (B, H, W, C) slices."""
    return lambda dy, dx: xp[:, dy : dy + h, dx : dx + w]


def _perceive_eager(p: Tensor, plan: Plan, kern: Tensor | None, at: Shift) -> None:
    """p (..., K, C) = the perception of the cells that ``at`` shifts, in place."""
    if plan.taps is not None:
        for j, taps in enumerate(plan.taps):
            out = p.select(-2, j)
            for i, (dy, dx, wt) in enumerate(taps):
                if i == 0:
                    out.copy_(at(dy, dx))  # mul(out=strided) would take a slow copying path
                    if wt != 1.0:
                        out.mul_(wt)
                else:
                    out.add_(at(dy, dx), alpha=wt)
        return
    assert kern is not None
    k = kern.shape[1]
    p.zero_()
    for dy in range(k):
        for dx in range(k):
            p.addcmul_(at(dy, dx).unsqueeze(-2), kern[:, dy, dx])  # (..., 1, C) x (K, C)


def perceive_backward(
    ws: Workspace, gp: Tensor, xp: Tensor, kern: Tensor | None, need_kern: bool
) -> tuple[Tensor, Tensor | None]:
    """Adjoint of :func:`perceive`: gp (N, K*C) -> (g xp in the workspace, g kern)."""
    plan = ws.plan
    b, h, w, c = ws.shape
    g5 = gp.view(b, h, w, plan.n_filters, c)
    _, gxp = ws.grad_buffers()
    if ws.compiled and _run_compiled(ws, "adjoint", g5, gxp):
        return gxp, None
    gxp.zero_()
    if plan.taps is not None:
        for j, taps in enumerate(plan.taps):
            gj = g5[:, :, :, j]
            for dy, dx, wt in taps:
                gxp[:, dy : dy + h, dx : dx + w].add_(gj, alpha=wt)
        return gxp, None
    assert kern is not None
    k = kern.shape[1]
    gk = torch.empty_like(kern) if need_kern else None
    for dy in range(k):
        for dx in range(k):
            gxp[:, dy : dy + h, dx : dx + w] += (g5 * kern[:, dy, dx]).sum(3)
            if gk is not None:
                s = xp[:, dy : dy + h, dx : dx + w].unsqueeze(3)
                gk[:, dy, dx] = (g5 * s).sum((0, 1, 2))
    return gxp, gk


# -- optional torch.compile of the fixed-filter perception and its adjoint ------------
#
# Eagerly, perception is a dozen strided passes over the state per step; inductor
# fuses each direction into one loop (about 4x faster on CPU). Compiling takes
# tens of seconds per new grid shape (cached on disk across processes), so it is
# used for training-sized grids only: NCAFLOW_COMPILE=auto (default) compiles on CPU
# from COMPILE_MIN_CELLS cells per step, 1 always tries, 0 never (a reproducible run sets 0:
# ncaflow.runtime.reproducible.ENVIRONMENT). Any failure to
# compile (no C++ compiler, unsupported platform) falls back to the eager code.

_COMPILED: dict[tuple[Plan, str, tuple[int, ...]], Callable[..., None]] = {}
_compile_failed = False


def _want_compile(plan: Plan, cells: int, cpu: bool) -> bool:
    mode = os.environ.get("NCAFLOW_COMPILE", "auto").strip().lower()
    if _compile_failed or plan.taps is None or mode in ("0", "false", "off", "no"):
        return False
    if mode in ("1", "true", "on", "yes"):
        return True
    has_cxx = any(shutil.which(c) for c in ("c++", "g++", "clang++"))
    return cpu and cells >= COMPILE_MIN_CELLS and has_cxx


def _tap_sum(taps: tuple[Tap, ...], at: Shift) -> Tensor:
    """sum over taps of weight * at(dy, dx)."""
    return functools.reduce(operator.add, [at(dy, dx) * wt for dy, dx, wt in taps])


def tap_filters(xp: Tensor, taps: Taps, h: int, w: int) -> list[Tensor]:
    """Fixed filters of a padded (B, H+2r, W+2r, C) state: one (B, H, W, C) per filter, the
    sum of its weighted taps (shifted slices). Written for torch.compile, which fuses them."""
    return [_tap_sum(t, _shifted(xp, h, w)) for t in taps]


def tap_adjoint(grads: Sequence[Tensor], taps: Taps, r: int) -> Tensor:
    """Adjoint of :func:`tap_filters`: the filters' gradients, (B, H, W, C) each, to the
    gradient of the padded state, (B, H+2r, W+2r, C). Taps are grouped by offset (the three
    fixed filters' 13 taps use 9) and each group's weighted sum is padded into place, which
    Inductor fuses into one kernel."""
    by_offset: dict[tuple[int, int], Tensor] = {}
    for g, filt in zip(grads, taps, strict=True):
        for dy, dx, wt in filt:
            prev = by_offset.get((dy, dx))
            by_offset[dy, dx] = g * wt if prev is None else prev + g * wt
    total = None
    for (dy, dx), term in by_offset.items():  # the adjoint of xp[:, dy:dy+h, dx:dx+w]
        term = F.pad(term, (0, 0, dx, 2 * r - dx, dy, 2 * r - dy))
        total = term if total is None else total + term
    assert total is not None
    return total


def _make(plan: Plan, kind: str, h: int, w: int) -> Callable[..., None]:
    taps, r = plan.taps, plan.radius
    assert taps is not None

    def perceive_into(xp: Tensor, out: Tensor) -> None:  # xp (B, H+2r, W+2r, C)
        cols = tap_filters(xp, taps, h, w)
        out.copy_(torch.cat([*cols, xp.new_ones(xp.shape[0], h, w, 1)], 3))

    def adjoint_into(g5: Tensor, out: Tensor) -> None:  # g5 (B, H, W, K, C)
        out.copy_(tap_adjoint(g5.unbind(3), taps, r))

    def rows_into(xpf: Tensor, q: Tensor, *outs: Tensor) -> None:  # perceive_rows
        wp = w + 2 * r  # the padded state's row length: (dy, dx) is q + (dy-r) * wp + dx-r
        for out, filt in zip(outs, taps, strict=True):
            out.copy_(_tap_sum(filt, lambda dy, dx: xpf[q + ((dy - r) * wp + dx - r)]))

    if kind == "rows":  # as many rows as a step updates: one kernel for any number
        return torch.compile(rows_into, dynamic=True, fullgraph=True)
    fn = perceive_into if kind == "perceive" else adjoint_into
    return torch.compile(fn, dynamic=False, fullgraph=True)


def _run_compiled(ws: Workspace, kind: str, src: Tensor, *args: Tensor) -> bool:
    """Run the compiled kernel ``kind`` on src and args (its outputs last); False (and eager
    from now on) if it fails."""
    global _compile_failed
    _, h, w, _ = ws.shape
    key = (ws.plan, kind, tuple(src.shape))
    try:
        fn = _COMPILED.get(key)
        if fn is None:
            fn = _COMPILED[key] = _make(ws.plan, kind, h, w)
        fn(src, *args)
        return True
    except Exception as err:  # compilation problems surface here, on the first call
        _compile_failed, ws.compiled = True, False
        warnings.warn(
            f"ncaflow: torch.compile of the perception failed ({type(err).__name__}: {err}); "
            "using the eager fast path (set NCAFLOW_COMPILE=0 to skip the attempt)",
            stacklevel=3,
        )
        return False


def mlp_forward(ws: Workspace, p: Tensor, w1a: Tensor, w2: Tensor, out: Tensor) -> Tensor:
    """out = relu(p @ w1a.T) @ w2.T, tiled over rows: p (M, K*C + 1) -> out (M, C_upd)."""
    m, tile = p.shape[0], ws.tile
    for i in range(0, m, tile):
        j = min(i + tile, m)
        ht = torch.mm(p[i:j], w1a.t(), out=ws.h[: j - i]).relu_()  # (tile, hidden)
        torch.mm(ht, w2.t(), out=out[i:j])
    return out


def mlp_backward(
    ws: Workspace, gdx: Tensor, p: Tensor, w1a: Tensor, w2: Tensor, gp: Tensor | None
) -> tuple[Tensor, Tensor]:
    """MLP gradients from gdx (M, C_upd) = dL/d(relu(p @ w1a.T) @ w2.T), tiled over rows.

    The hidden activations are recomputed per tile (cheaper than storing them).
    gp: optional (M, K*C) output for dL/dp. Returns (g w1a, g w2).
    """
    m, tile = p.shape[0], ws.tile
    gw1a, gw2 = torch.zeros_like(w1a), torch.zeros_like(w2)
    w1 = w1a[:, :-1]
    for i in range(0, m, tile):
        j = min(i + tile, m)
        pt, gt = p[i:j], gdx[i:j]
        ht = torch.mm(pt, w1a.t(), out=ws.h[: j - i]).relu_()
        gw2.addmm_(gt.t(), ht)
        gh = torch.mm(gt, w2, out=ws.gh[: j - i])  # (tile, hidden)
        torch.ops.aten.threshold_backward.grad_input(gh, ht, 0.0, grad_input=gh)
        gw1a.addmm_(gh.t(), pt)
        if gp is not None:
            torch.mm(gh, w1, out=gp[i:j])
    return gw1a, gw2


def _above(x: Tensor, plan: Plan) -> Tensor:
    """(B, H, W, C) -> (B, H, W) bool: the alive channel exceeds the threshold."""
    return x[:, :, :, plan.alive_channel] > plan.alive_threshold


def _dilate(m: Tensor) -> Tensor:
    """3x3 dilation of a (B, H, W) bool mask (what max_pool2d(3, 1, 1) > t gives, cheaper)."""
    b, h, w = m.shape
    t = m.new_zeros(b, h, w + 2)
    t[:, :, 1 : w + 1] = m
    u = m.new_zeros(b, h + 2, w)
    torch.logical_or(t[:, :, :w], t[:, :, 1 : w + 1], out=u[:, 1 : h + 1])
    u[:, 1 : h + 1] |= t[:, :, 2:]
    out = torch.logical_or(u[:, :h], u[:, 1 : h + 1])
    return out.logical_or_(u[:, 2:])


def _rows(ws: Workspace, mask: Tensor | None) -> Tensor | None:
    """Indices (M,) of the cells whose update matters, or None to update densely.

    Cells that do not fire get ``dx * 0``, and cells far from anything alive are
    zeroed by the alive mask whatever their update: skipping their rows in the
    GEMMs changes no result. Only on CPU (elsewhere nonzero() would synchronise).
    """
    if mask is None or not ws.sparse:
        return None
    idx = mask.view(-1).nonzero().squeeze(1)
    return None if idx.numel() > 0.9 * ws.n else idx


def step_cl(
    ws: Workspace, x: Tensor, fire: Tensor | None, w1a: Tensor, w2: Tensor, kern: Tensor | None
) -> tuple[Tensor, Tensor | None]:
    """One step on a channels-last state. Returns (y, life), both fresh tensors.

    x: (B, H, W, C); fire: (N, 1) or None; w1a: (hidden, K*C + 1) = [fc1 | bias];
    w2: (C_upd, hidden). y: (B, H, W, C); life: (B, H, W, 1) 0/1 in x's dtype, or
    None without alive masking.
    """
    plan = ws.plan
    b, hh, ww, c = x.shape
    n_in = plan.input_channels
    xp = ws.pad(x)
    active = None if fire is None else fire != 0  # (N, 1)
    pre = None
    if plan.alive_channel is not None:
        pre = _dilate(_above(x, plan))  # (B, H, W) alive before the step
        near = _dilate(pre).view(-1, 1)  # cells whose update can reach an alive cell
        active = near if active is None else active & near
    idx = _rows(ws, active)
    if idx is None:
        p = perceive(ws, xp, kern)  # (N, K*C + 1)
        dx = mlp_forward(ws, p, w1a, w2, ws.dx)  # (N, C_upd)
        if fire is not None:
            dx.mul_(fire)
    else:
        m = idx.numel()
        rows = perceive_rows(ws, xp, idx, kern)  # (M, K*C + 1)
        dxa = mlp_forward(ws, rows, w1a, w2, ws.dxa[:m])
        if fire is not None:
            dxa.mul_(fire.index_select(0, idx))
        dx = ws.dx.zero_().index_copy_(0, idx, dxa)
    dx4 = dx.view(b, hh, ww, c - n_in)
    if n_in:
        y = x.clone()
        y[:, :, :, n_in:] += dx4
    else:
        y = x + dx4
    life = None
    if pre is not None:
        life = (pre & _dilate(_above(y, plan))).unsqueeze(3).to(y.dtype)  # (B, H, W, 1)
        (y[:, :, :, n_in:] if n_in else y).mul_(life)
    return y, life


class StepFn(torch.autograd.Function):
    """One step with a hand-written backward that saves only x, the fire and the life mask."""

    @staticmethod
    def forward(
        ctx: FunctionCtx,
        x: Tensor,
        fire: Tensor | None,
        w1a: Tensor,
        w2: Tensor,
        kern: Tensor | None,
        ws: Workspace,
    ) -> Tensor:
        y, life = step_cl(ws, x, fire, w1a, w2, kern)
        ctx.save_for_backward(x, fire, w1a, w2, kern, life)  # type: ignore[arg-type]
        ctx.ws = ws  # type: ignore[attr-defined]
        return y

    @staticmethod
    def backward(ctx: FunctionCtx, g: Tensor) -> tuple[Tensor | None, ...]:
        x, fire, w1a, w2, kern, life = ctx.saved_tensors  # type: ignore[attr-defined]
        ws: Workspace = ctx.ws  # type: ignore[attr-defined]
        need_x, _, need_w1, need_w2, need_k = ctx.needs_input_grad[:5]  # type: ignore[attr-defined]
        n, n_in = ws.n, ws.plan.input_channels
        b, hh, ww, c = x.shape
        g = g.contiguous()
        g_upd = g[:, :, :, n_in:]  # (B, H, W, C_upd): dL/dy before the life mask
        xp = ws.pad(x)
        need_p = bool(need_x or need_k)
        active = None if fire is None else fire != 0  # rows with a non-zero gdx
        if life is not None:
            alive = life.view(n, 1) != 0
            active = alive if active is None else active & alive
        idx = _rows(ws, active)
        gp, _ = ws.grad_buffers() if need_p else (None, None)
        if idx is None:
            gdx = g_upd if life is None else g_upd * life
            gdx = (gdx * fire.view(b, hh, ww, 1) if fire is not None else gdx).reshape(n, -1)
            gw1a, gw2 = mlp_backward(ws, gdx, perceive(ws, xp, kern), w1a, w2, gp)
        else:  # these rows live (life = 1), so dL/d dx = g * fire there
            m = idx.numel()
            rows = perceive_rows(ws, xp, idx, kern)
            gdx = g.view(n, c).index_select(0, idx)[:, n_in:]
            if fire is not None:
                gdx = gdx * fire.index_select(0, idx)
            gpa = ws.gpa[:m] if gp is not None else None
            gw1a, gw2 = mlp_backward(ws, gdx.contiguous(), rows, w1a, w2, gpa)
            if gp is not None and gpa is not None:
                gp.zero_().index_copy_(0, idx, gpa)
        gx = gk = None
        if gp is not None:
            gxp, gk = perceive_backward(ws, gp, xp, kern, bool(need_k))
            if need_x:
                gx = ws.unpad(gxp)  # fresh (B, H, W, C)
                if life is None:
                    gx[:, :, :, n_in:] += g_upd
                else:
                    gx[:, :, :, n_in:].addcmul_(g_upd, life)
                if n_in:
                    gx[:, :, :, :n_in] += g[:, :, :, :n_in]
        return gx, None, gw1a if need_w1 else None, gw2 if need_w2 else None, gk, None
