"""The NCA step written for a compiler: the ``compiled`` and ``fused`` implementations.

:func:`gemm_step` is :meth:`ncaflow.model.nca.NCA.step_reference` with fixed filters as shifted
slices, the 1x1 convolutions as row-major GEMMs over the cells (or the Triton MLP of
:mod:`ncaflow.backends.fused`), on a channels-last state. :func:`gemm_step_compiled` gives
each model structure its own ``torch.compile`` of it.
"""

from __future__ import annotations

import functools
import itertools
import types
from collections.abc import Callable, Hashable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ncaflow.backends import fast, fused
from ncaflow.backends.stencil import alive_planes, pad_edges, perceive

__all__ = ["TRAINING_INDUCTOR_OPTIONS", "gemm_step", "gemm_step_compiled", "rows_that_matter"]


def gemm_step(
    x: Tensor,
    fire: Tensor | None,
    kernels: Tensor | None,
    w1: Tensor,
    b1: Tensor,
    w2: Tensor,
    taps: fast.Taps | None,
    padding: str,
    n_in: int,
    alive: tuple[int, float] | None,
    triton_mlp: bool,
    skip_rows: bool,
) -> Tensor:
    """One step of :meth:`ncaflow.model.nca.NCA.step_reference` written for a compiler: fixed
    filters (taps) as shifted slices, one fused stencil instead of a depthwise convolution,
    and the 1x1 convolutions as row-major GEMMs over the cells (or the Triton MLP; with
    skip_rows it computes only the rows of :func:`rows_that_matter`). Same function,
    different rounding. It works on the state channels-last, (B, H, W, C) in memory, so that
    the cells are the GEMM's rows with no transposing copy; the result is (B, C, H, W) with
    channels-last strides, and a rollout keeps the state so (``NCA._forward_reference``).

    A free function of tensors and plain constants, so that models of one structure share
    its compiled graphs (:func:`gemm_step_compiled`).
    """
    b, _, h, w = x.shape
    s = x.permute(0, 2, 3, 1)  # (B, H, W, C): a free view of the rollout's channels-last state
    if taps is None:
        assert kernels is not None
        p = perceive(x, kernels, padding).permute(0, 2, 3, 1)  # (B, H, W, C*K)
    else:
        p = _Stencil.apply(pad_edges(s, padding, dims=(1, 2)), taps)  # (B, H, W, C, K)
    rows = p.reshape(b * h * w, -1)
    if triton_mlp and skip_rows:
        out = fused.fused_mlp(rows, w1, b1, w2, rows_that_matter(s, fire, alive))
        fire = None  # applied: the kernels give zero to every cell that does not fire
    elif triton_mlp:
        out = fused.fused_mlp(rows, w1, b1, w2)
    else:
        out = F.linear(F.relu(F.linear(rows, w1, b1)), w2)
    dx = out.view(b, h, w, -1)
    if fire is not None:
        dx = dx * fire.view(b, h, w, 1)
    y = s[..., n_in:] + dx
    if alive is not None:
        full = torch.cat([s[..., :n_in], y], -1) if n_in else y
        y = y * _alive_cl(s, full, *alive).to(y.dtype)
    return (torch.cat([s[..., :n_in], y], -1) if n_in else y).permute(0, 3, 1, 2)


def rows_that_matter(
    s: Tensor, fire: Tensor | None, alive: tuple[int, float] | None
) -> Tensor | None:
    """(B, H, W) int32 0/1 mask of the cells whose update can change the step's result, for the
    fused MLP to skip the others (None: every cell): cells that fire and, with alive
    masking, lie within two cells of an alive one. Farther cells and their neighbours are
    dead before the step, so the alive mask zeroes them whatever their update (the rule of
    the CPU fast path, :func:`ncaflow.backends.fast.step_cl`). s is the (B, H, W, C) state.

    int32 is the dtype the row ordering scans (:func:`ncaflow.backends.fused.fused_mlp`), so
    in a compiled step the mask's kernel writes it so: a float mask cost a cast-copy kernel
    a step before the scan (2.5 µs of ~60 at batch 8 on an H200)."""
    keep = None if fire is None else fire.view(fire.shape[0], *fire.shape[2:]) != 0
    if alive is not None:
        channel, threshold = alive
        # the 5 x 5 maximum (3 x 3 twice) as 1 x 5 then 5 x 1: Inductor makes a 5 x 5 window a
        # reduction kernel, 72 µs a step at batch 256 on an H200 against 5 µs for the two
        across = F.max_pool2d(s[..., channel], (1, 5), stride=1, padding=(0, 2))
        near = F.max_pool2d(across, (5, 1), stride=1, padding=(2, 0)) > threshold
        keep = near if keep is None else keep & near
    return None if keep is None else keep.to(torch.int32)


class _Stencil(torch.autograd.Function):
    """The fixed filters of a padded (B, H+2, W+2, C) state as (B, H, W, C, K), channel
    c*K + j as :func:`perceive` orders them, with the adjoint written out
    (:func:`ncaflow.backends.fast.tap_adjoint`, which the CPU fast path compiles too). On an H200 at
    batch 256 (growing config) Inductor's kernels for that adjoint took 184 µs a step against
    242 µs for autograd's slice backwards (two kernels each), and 135 µs in one kernel with
    :data:`TRAINING_INDUCTOR_OPTIONS`."""

    @staticmethod
    def forward(sp: Tensor, taps: fast.Taps) -> Tensor:
        return torch.stack(fast.tap_filters(sp, taps, sp.shape[1] - 2, sp.shape[2] - 2), -1)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Tensor) -> None:
        ctx.taps = inputs[1]

    @staticmethod
    def backward(ctx: Any, g: Tensor) -> tuple[Tensor, None]:
        return fast.tap_adjoint(g.unbind(-1), ctx.taps, 1), None


def _alive_cl(before: Tensor, after: Tensor, channel: int, threshold: float) -> Tensor:
    """:func:`_alive` of two (B, H, W, C) states, both alive, as (B, H, W, 1): the alpha
    planes are stacked into one contiguous (B, 2, H, W) tensor for a single 3x3 maximum.
    On an H200 (graph-fused training, growing config) that took the step from 85.7-86.4 to
    79.1-79.5 µs at batch 8 and from 1,548 to 1,472 µs at batch 256, against two maxima
    over the alpha channel read in place at a stride of C floats (102 µs a step for that
    kernel at batch 256)."""
    b, h, w, _ = before.shape
    live = alive_planes(torch.stack([before[..., channel], after[..., channel]], 1), threshold)
    return (live[:, 0] & live[:, 1]).view(b, h, w, 1)


_STRUCTURES = itertools.count()  # numbers the copies of gemm_step's code


@functools.cache
def gemm_step_compiled(structure: Hashable, training: bool) -> Callable[..., Tensor]:
    """:func:`gemm_step` through torch.compile for one model structure (its ModelConfig and
    whether the MLP runs on Triton, which fix every constant and weight shape), made on first
    use: importing the compiler costs start-up time that no other implementation needs.
    Training steps (gradients needed) compile with :data:`TRAINING_INDUCTOR_OPTIONS`.

    Dynamo keeps its compiled graphs on the code object and allows eight of them, after
    which ``fullgraph`` fails: compiling the bound method ``step_gemm`` failed at the ninth
    model size of the GPU tests. One code object per structure gives each its own budget, so
    a process may build any number of models (a grid search, k-fold), and each compiles once
    per input shape, then once for all shapes (``dynamic=None``).

    Each copy also gets its own name: Dynamo's automatic-dynamic state is keyed by file, line
    and name, so copies with one name shared it, and a second structure's first compile had
    its channel count and input channels symbolic (a grouped convolution's groups too, which
    made Inductor's CUDA layout heuristic fail on learned filters, torch 2.11)."""
    del structure  # the key: one copy of the code per structure
    name = f"gemm_step_{next(_STRUCTURES)}"
    code = gemm_step.__code__.replace(co_name=name, co_qualname=name)  # same body
    fn = types.FunctionType(code, gemm_step.__globals__, name)
    return torch.compile(fn, fullgraph=True, options=TRAINING_INDUCTOR_OPTIONS if training else {})


# Inductor stores an intermediate once it is read more than realize_reads_threshold (4)
# times: each Sobel filter's six shifted reads made it write the filter to memory and read it
# back in another kernel (so the kernels' names say), splitting the step's perception and its
# adjoint into more kernels.
# Higher limits keep each in one kernel, which recomputes the cheap sums instead. Measured on
# an H200 (graph-fused, batch 8): training 166 -> 182 it/s, but inference 372 -> 224 it/s, so
# inference keeps the defaults.
TRAINING_INDUCTOR_OPTIONS: dict[str, Any] = {
    "realize_reads_threshold": 64,
    "realize_acc_reads_threshold": 64,
    "realize_opcount_threshold": 200,
}
