"""The backends: one object per implementation of the NCA step, chosen once by name.

A model (:class:`~ncaflow.model.nca.NCA`) picks its backend when it is built
(``NCA(impl=...)``, ``ncaflow train --impl``) and hands it its weights
(:meth:`Automaton.weights`) at every step or rollout:

- ``reference``: the model's own plain formulation (:meth:`Automaton.step_reference`);
- ``fast``: the CPU fast path of :mod:`~ncaflow.backends.fast` on a channels-last
  state, with the weights packed once per rollout and the scratch memory kept per
  state shape;
- ``compiled``: :func:`~ncaflow.backends.gemm.gemm_step` through ``torch.compile``;
- ``fused``: the same with the update MLP as Triton kernels where its sizes fit them;
- ``auto``: the fast path on CPU and for large GPU grids, the reference step otherwise;
  a training run on CUDA with Triton takes ``fused`` instead (:meth:`Backend.on`).

Fire masks are always drawn by the model in the same order, so every backend sees the
same masks; all give the reference step's results up to float rounding.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import Tensor

from ncaflow.backends import IMPLS, fast, fused
from ncaflow.backends.base import Automaton, Backend, needs_grad
from ncaflow.backends.gemm import gemm_step, gemm_step_compiled
from ncaflow.config import ConfigError

__all__ = ["BACKENDS", "FastWeights", "gemm_args", "get_backend"]

FastWeights = tuple[Tensor, Tensor, Tensor | None]  # w1a, w2, kern (see Fast.weights)

GPU_FAST_MIN_CELLS = 2**20  # B*H*W from which a GPU also takes the fast path


class Reference(Backend):
    """The plain formulation, kept as the definition and for tests."""

    name = "reference"

    def step(self, model: Automaton, x: Tensor, fire: Tensor | None) -> Tensor:
        return model.step_reference(x, fire)


class Fast(Backend):
    """The CPU fast path: channels-last GEMMs, a hand-written backward that stores only
    the state per step, only the rows that can change computed."""

    name = "fast"

    def pick(self, x: Tensor) -> Backend:
        return self if x.dim() == 4 and x.is_floating_point() else REFERENCE

    @staticmethod
    def weights(model: Automaton) -> FastWeights:
        """(w1a (hidden, K*C + 1) = [fc1 | bias], w2 (C_upd, hidden), kern (K, k, k, C) or
        None), built once per rollout with autograd, so gradients reach fc1, fc2 and filters."""
        cfg, w = model.config, model.weights()
        c, k_n, hid = cfg.channels, model.n_filters, cfg.hidden_width
        w1 = w.w1.view(hid, c, k_n).transpose(1, 2).reshape(hid, k_n * c)  # j*C + c
        w1a = torch.cat([w1, w.b1.unsqueeze(1)], 1)
        kern = None
        if w.kernels is not None:
            k = cfg.kernel_size
            kern = w.kernels.view(c, k_n, k, k).permute(1, 2, 3, 0).contiguous()
        return w1a, w.w2, kern

    @staticmethod
    def workspace(model: Automaton, s: Tensor) -> fast.Workspace:
        """The fast path's scratch memory for states like s, kept on the model for the next
        rollout of the same shape (re-touching fresh pages costs more than the step's
        elementwise work). Rollouts of one model must therefore not run concurrently in
        several threads."""
        key = (tuple(s.shape), s.dtype, s.device)
        cached = model.scratch.get("workspace")
        if cached is None or cached[0] != key:
            cached = (key, fast.Workspace(model.plan, s, model.config.hidden_width))
            model.scratch["workspace"] = cached
        workspace: fast.Workspace = cached[1]
        return workspace

    def step_cl(
        self, model: Automaton, s: Tensor, fire: Tensor | None, weights: FastWeights, grad: bool
    ) -> Tensor:
        """One fast-path step on a (B, H, W, C) state; fire (B, 1, H, W) or None."""
        b, h, w, _ = s.shape
        f = None if fire is None else fire.to(s.dtype).reshape(b * h * w, 1)
        ws = self.workspace(model, s)
        if grad:
            y: Tensor = fast.StepFn.apply(s, f, *weights, ws)
            return y
        return fast.step_cl(ws, s, f, *weights)[0]

    def step(self, model: Automaton, x: Tensor, fire: Tensor | None) -> Tensor:
        s = x.permute(0, 2, 3, 1).contiguous()  # (B, H, W, C)
        weights, grad = self.weights(model), needs_grad(model, x)
        return self.step_cl(model, s, fire, weights, grad).permute(0, 3, 1, 2).contiguous()

    def rollout(
        self,
        model: Automaton,
        x: Tensor,
        masks: Iterator[Tensor | None],
        callback: Callable[[int, Tensor], None] | None,
        checkpoint_every: int,
    ) -> Tensor:
        """One step per mask; only the state per step is stored for backward, so no
        checkpointing is needed (checkpoint_every is ignored)."""
        weights, grad = self.weights(model), needs_grad(model, x)
        s = x.permute(0, 2, 3, 1).contiguous()  # (B, H, W, C)
        for t, m in enumerate(masks, start=1):
            s = self.step_cl(model, s, m, weights, grad)
            if callback is not None:
                callback(t, s.permute(0, 3, 1, 2).contiguous())
        return s.permute(0, 3, 1, 2).contiguous()  # (B, C, H, W)


class Compiled(Backend):
    """:func:`~ncaflow.backends.gemm.gemm_step` through ``torch.compile`` (fused kernels
    for GPUs), on a channels-last state."""

    name = "compiled"
    channels_last = True
    pinned_cpu_kernels = False  # torch.compile writes its own CPU code for this CPU

    def step(self, model: Automaton, x: Tensor, fire: Tensor | None) -> Tensor:
        training = needs_grad(model, x)
        step = gemm_step_compiled(model.structure, training)
        return step(x, fire, *gemm_args(model, training))


class Fused(Compiled):
    """The compiled step with the update MLP as Triton kernels (:mod:`~ncaflow.backends.fused`)
    where its sizes fit them; without a GPU it runs in Triton's interpreter, uncompiled."""

    name = "fused"

    def triton_mlp(self, sizes: tuple[int, int, int]) -> bool:
        if fused.supports(*sizes):
            return True
        warnings.warn(
            "impl='fused': the update MLP {} -> {} -> {} is too large for the fused "
            "kernels (fused.supports); it runs as compiled GEMMs".format(*sizes),
            stacklevel=3,  # the model's builder
        )
        return False

    def unavailable(self, device: torch.device) -> str | None:
        return None if fused.available(device) else "needs triton and a CUDA device"

    def step(self, model: Automaton, x: Tensor, fire: Tensor | None) -> Tensor:
        if x.device.type != "cuda":  # Triton's interpreter: no compiler
            return gemm_step(x, fire, *gemm_args(model, needs_grad(model, x)))
        return super().step(model, x, fire)


class Auto(Backend):
    """The fast path on CPU; on a GPU only for large grids (B*H*W > 2**20 cells), where its
    0.12-0.16x memory matters more than its speed: on one H100 it ran 0.4x the eager speed
    at batch 8 (launch-bound), see benchmarks/README.md. Elsewhere the reference step."""

    name = "auto"

    def pick(self, x: Tensor) -> Backend:
        if x.dim() != 4 or not x.is_floating_point():
            return REFERENCE
        if x.device.type == "cpu" or x.shape[0] * x.shape[2] * x.shape[3] > GPU_FAST_MIN_CELLS:
            return FAST
        return REFERENCE

    def on(self, device: torch.device, sizes: tuple[int, int, int]) -> Backend:
        """'fused' on a CUDA device with Triton where the model's MLP fits the kernels (on
        an H200 with CUDA graphs: 7x the eager baseline's training speed at batch 8, 2.7x
        at batch 256; the README's Performance section); otherwise decided per grid."""
        if device.type == "cuda" and fused.available(device) and fused.fits(device, *sizes):
            return FUSED
        return self


REFERENCE, FAST, COMPILED, FUSED, AUTO = Reference(), Fast(), Compiled(), Fused(), Auto()
BACKENDS: dict[str, Backend] = {b.name: b for b in (AUTO, FAST, REFERENCE, COMPILED, FUSED)}
assert tuple(BACKENDS) == IMPLS  # the names the command line offers


def get_backend(name: str) -> Backend:
    """The backend registered under ``name`` (``--impl``)."""
    if name not in BACKENDS:
        raise ConfigError(f"impl {name!r}: unknown implementation; choose one of {list(IMPLS)}")
    return BACKENDS[name]


def gemm_args(model: Automaton, training: bool) -> tuple[Any, ...]:
    """The weights and constants of :func:`~ncaflow.backends.gemm.gemm_step` after x, fire.

    The Triton MLP skips rows only when training: there the backward, twice the
    forward's work, gains most. In inference choosing the rows cost more than it saved
    (H200, graph-fused, grown state, alternating processes: batch 8 411-414 it/s with
    the skipping against 472-474 without, batch 256 29.1-29.3 against 29.4-29.5)."""
    cfg, w = model.config, model.weights()
    alive = (cfg.alive_channel, cfg.alive_threshold) if cfg.alive_channel is not None else None
    return (
        w.kernels,
        w.w1,
        w.b1,
        w.w2,
        model.plan.taps,
        cfg.padding,
        cfg.input_channels,
        alive,
        model.triton_mlp,
        training,
    )
