"""How an :class:`~ncaflow.nca.NCA` runs a step or a rollout on the non-reference backends.

The model (:mod:`ncaflow.nca`) holds the parameters and the plain formulation; this
module picks a backend for a state and feeds it the model's weights in the layout
that backend wants:

- :func:`use_fast`: the CPU fast path everywhere on CPU, and on a GPU for large grids;
- :func:`fast_step` / :func:`fast_rollout`: :mod:`~ncaflow.backends.fast` on a
  channels-last state, with the weights packed once per rollout (:func:`fast_weights`)
  and the scratch memory kept per state shape (:func:`workspace`);
- :func:`plain_step`: the reference step, or :func:`~ncaflow.backends.gemm.gemm_step`
  (compiled, and with the Triton MLP for ``impl="fused"``), fed by :func:`gemm_args`.

Fire masks are always drawn by the model (:meth:`NCA.masks`) in the same order, so
every backend sees the same masks.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from ncaflow.backends import fast
from ncaflow.backends.gemm import gemm_step, gemm_step_compiled

if TYPE_CHECKING:
    from ncaflow.nca import NCA

__all__ = [
    "FastWeights",
    "fast_rollout",
    "fast_step",
    "fast_weights",
    "gemm_args",
    "needs_grad",
    "plain_step",
    "use_fast",
    "workspace",
]

FastWeights = tuple[Tensor, Tensor, Tensor | None]  # w1a, w2, kern (see fast_weights)

GPU_FAST_MIN_CELLS = 2**20  # B*H*W from which a GPU also takes the fast path


def use_fast(model: NCA, x: Tensor) -> bool:
    """The fast path on CPU; on a GPU only for large grids (B*H*W > 2**20 cells), where its
    0.12-0.16x memory matters more than its speed: on one H100 it ran 0.4x the eager speed
    at batch 8 (launch-bound), see benchmarks/README.md."""
    plain = model.impl in ("reference", "compiled", "fused")
    if plain or x.dim() != 4 or not x.is_floating_point():
        return False
    if model.impl == "fast" or x.device.type == "cpu":
        return True
    return x.shape[0] * x.shape[2] * x.shape[3] > GPU_FAST_MIN_CELLS


def needs_grad(model: NCA, x: Tensor) -> bool:
    """Whether a step on x must support backward (the fast path then saves its inputs)."""
    return torch.is_grad_enabled() and (
        x.requires_grad or any(p.requires_grad for p in model.parameters())
    )


# -- the fast path --------------------------------------------------------------


def fast_weights(model: NCA) -> FastWeights:
    """(w1a (hidden, K*C + 1) = [fc1 | bias], w2 (C_upd, hidden), kern (K, k, k, C) or None),
    built once per rollout with autograd, so gradients reach fc1, fc2 and filters."""
    cfg = model.config
    c, k_n, hid = cfg.channels, model.n_filters, cfg.hidden_width
    w1 = model.fc1.weight.view(hid, c, k_n).transpose(1, 2).reshape(hid, k_n * c)  # j*C + c
    b1: Tensor = model.fc1.bias  # type: ignore[assignment]
    w1a = torch.cat([w1, b1.unsqueeze(1)], 1)
    w2 = model.fc2.weight.view(model.updated, hid)
    kern = None
    if model.plan.taps is None:
        k = cfg.kernel_size
        kern = model.kernels().view(c, k_n, k, k).permute(1, 2, 3, 0).contiguous()
    return w1a, w2, kern


def workspace(model: NCA, s: Tensor) -> fast.Workspace:
    """The fast path's scratch memory for states like s, kept on the model for the next
    rollout of the same shape (re-touching fresh pages costs more than the step's
    elementwise work). Rollouts of one model must therefore not run concurrently in
    several threads."""
    key = (tuple(s.shape), s.dtype, s.device)
    cached = model.__dict__.get("_ws")
    if cached is None or cached[0] != key:
        cached = (key, fast.Workspace(model.plan, s, model.config.hidden_width))
        model.__dict__["_ws"] = cached
    return cached[1]


def fast_step(
    model: NCA, s: Tensor, fire: Tensor | None, weights: FastWeights, grad: bool
) -> Tensor:
    """One fast-path step on a (B, H, W, C) state; fire (B, 1, H, W) or None."""
    b, h, w, _ = s.shape
    f = None if fire is None else fire.to(s.dtype).reshape(b * h * w, 1)
    ws = workspace(model, s)
    if grad:
        y: Tensor = fast.StepFn.apply(s, f, *weights, ws)
        return y
    return fast.step_cl(ws, s, f, *weights)[0]


def fast_rollout(
    model: NCA,
    x: Tensor,
    masks: Iterator[Tensor | None],
    callback: Callable[[int, Tensor], None] | None,
) -> Tensor:
    """Run one step per mask on the (B, C, H, W) state x through the fast path; only the
    state per step is stored for backward, so no checkpointing is needed."""
    weights, grad = fast_weights(model), needs_grad(model, x)
    s = x.permute(0, 2, 3, 1).contiguous()  # (B, H, W, C)
    for t, m in enumerate(masks, start=1):
        s = fast_step(model, s, m, weights, grad)
        if callback is not None:
            callback(t, s.permute(0, 3, 1, 2).contiguous())
    return s.permute(0, 3, 1, 2).contiguous()  # (B, C, H, W)


# -- the plain and compiled steps -----------------------------------------------


def gemm_args(model: NCA, training: bool) -> tuple[Any, ...]:
    """The weights and constants of :func:`~ncaflow.backends.gemm.gemm_step` after x, fire.

    The Triton MLP skips rows only when training: there the backward, twice the
    forward's work, gains most. In inference choosing the rows cost more than it saved
    (H200, graph-fused, grown state, alternating processes: batch 8 411-414 it/s with
    the skipping against 472-474 without, batch 256 29.1-29.3 against 29.4-29.5)."""
    cfg = model.config
    kernels = model.kernels() if model.plan.taps is None else None
    w1, b1, w2 = model.fc1.weight.flatten(1), model.fc1.bias, model.fc2.weight.flatten(1)
    alive = (cfg.alive_channel, cfg.alive_threshold) if cfg.alive_channel is not None else None
    return (
        kernels,
        w1,
        b1,
        w2,
        model.plan.taps,
        cfg.padding,
        cfg.input_channels,
        alive,
        model.triton_mlp,
        training,
    )


def plain_step(model: NCA, x: Tensor, fire: Tensor | None) -> Tensor:
    """The step of the non-fast implementations: reference, or the gemm step compiled (on a
    GPU the fused implementation compiles it too, around its Triton MLP)."""
    if model.impl == "fused" and x.device.type != "cuda":  # Triton's interpreter: no compiler
        return gemm_step(x, fire, *gemm_args(model, needs_grad(model, x)))
    if model.impl not in ("compiled", "fused"):
        return model.step_reference(x, fire)
    training = needs_grad(model, x)
    step = gemm_step_compiled(model.structure, training)
    return step(x, fire, *gemm_args(model, training))
