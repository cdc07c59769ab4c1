"""The neural cellular automaton: perception, update rule, fire and alive masks, rollout.

State layout, ``(B, C, H, W)`` with ``C = input + output + hidden`` channels::

    [ input (frozen) | output | hidden ]

One step::

    p  = perceive(x)                      (B, C*K, H, W)   K filters per channel
    dx = W2 @ relu(W1 @ p + b1)           (B, C_upd, H, W) 1x1 convs, W2 starts at 0
    x[:, input:] += dx * fire             fire ~ Bernoulli(fire_rate), (B, 1, H, W)
    x[:, input:] *= alive_before & alive_after   (optional, Distill alive masking)

Nothing here knows about tasks.

``forward`` runs the CPU fast path of :mod:`ncaflow.backends.fast` (channels-last
state, GEMMs, a hand-written backward that stores little per step), or on a GPU the
compiled or Triton-fused step of :mod:`ncaflow.backends.gemm`; the plain formulation
below stays the definition (``impl="reference"``). All agree to float rounding
(tests/test_nca_fast.py, tests/test_fused.py).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from ncaflow.backends import fast, fused
from ncaflow.backends.gemm import gemm_step, gemm_step_compiled
from ncaflow.config import ModelConfig
from ncaflow.perception import alive_planes, filter_bank, n_filters, perceive, taps

__all__ = ["NCA", "Impl", "mlp_sizes"]

Impl = Literal["auto", "fast", "reference", "compiled", "fused"]


def mlp_sizes(config: ModelConfig) -> tuple[int, int, int]:
    """The update MLP's (inputs, hidden, outputs): the perception channels, hidden_width and
    the updated channels."""
    k = n_filters(config.perception, config.learned_filters)
    updated = config.output_channels + config.hidden_channels
    return config.channels * k, config.hidden_width, updated


class NCA(nn.Module):
    """A single-scale NCA built from a :class:`~ncaflow.config.ModelConfig`.

    impl: "auto" (fast path on CPU and for large GPU grids, see _use_fast), "fast",
    "reference" (the plain formulation, kept as the definition and for tests),
    "compiled" (:meth:`step_gemm` through torch.compile: fused kernels for GPUs) or
    "fused" (:meth:`step_gemm` with the MLP as Triton kernels, :mod:`ncaflow.backends.fused`, where
    its sizes fit them, and on a GPU the rest of the step through torch.compile).
    All give the same results up to float rounding and draw the same masks.
    """

    def __init__(self, *, config: ModelConfig, impl: Impl = "auto") -> None:
        super().__init__()
        config.validate()
        if impl not in ("auto", "fast", "reference", "compiled", "fused"):
            raise ValueError(
                f"impl must be 'auto', 'fast', 'reference', 'compiled' or 'fused', got {impl!r}"
            )
        self.config = config
        self.impl: Impl = impl
        c = config.channels
        sizes = mlp_sizes(config)  # (C*K perception channels, hidden_width, C_upd)
        self.n_filters, self.updated = sizes[0] // c, sizes[2]
        bank = filter_bank(config.perception)  # (K, 3, 3), or None: learned filters
        if bank is None:
            k = config.kernel_size
            learned = torch.randn(c * config.learned_filters, 1, k, k) * (1.0 / k)
            self.filters = nn.Parameter(learned)
        else:
            self.register_buffer("bank", bank.repeat(c, 1, 1).unsqueeze(1), persistent=False)
        self.fc1 = nn.Conv2d(sizes[0], sizes[1], 1)
        self.fc2 = nn.Conv2d(sizes[1], self.updated, 1, bias=False)
        nn.init.zeros_(self.fc2.weight)  # the first step leaves the state unchanged
        self._plan = self._make_plan()
        self._triton_mlp = impl == "fused" and fused.supports(*sizes)  # fixed by the shapes
        if impl == "fused" and not self._triton_mlp:
            warnings.warn(
                "impl='fused': the update MLP {} -> {} -> {} is too large for the fused "
                "kernels (fused.supports); it runs as compiled GEMMs".format(*sizes),
                stacklevel=2,
            )
        # what the compiled step's graphs depend on besides input shapes (gemm_step_compiled)
        self._structure = (config, self._triton_mlp)

    def _make_plan(self) -> fast.Plan:
        cfg = self.config
        bank = filter_bank(cfg.perception)
        k = cfg.kernel_size if bank is None else 3
        return fast.Plan(
            input_channels=cfg.input_channels,
            n_filters=self.n_filters,
            radius=k // 2,
            padding=cfg.padding,
            alive_channel=cfg.alive_channel,
            alive_threshold=cfg.alive_threshold,
            taps=None if bank is None else taps(bank),
        )

    # -- one step ---------------------------------------------------------------

    def kernels(self) -> Tensor:
        """The perception bank as ``(C*K, 1, k, k)`` depthwise weights."""
        if self._plan.taps is not None:  # a fixed bank
            bank: Tensor = self.bank  # type: ignore[assignment]
            return bank
        c, n, k = self.config.channels, self.config.learned_filters, self.config.kernel_size
        ident = torch.zeros(c, 1, 1, k, k, device=self.filters.device, dtype=self.filters.dtype)
        ident[..., k // 2, k // 2] = 1.0
        learned = self.filters.view(c, n, 1, k, k)
        return torch.cat([ident, learned], dim=1).view(c * (n + 1), 1, k, k)

    def alive(self, x: Tensor) -> Tensor:
        """(B, C, H, W) -> (B, 1, H, W) bool: some 3x3 neighbour's alpha exceeds the threshold."""
        assert self.config.alive_channel is not None
        channel = self.config.alive_channel
        return alive_planes(x[:, channel : channel + 1], self.config.alive_threshold)

    def update(self, x: Tensor) -> Tensor:
        """(B, C, H, W) -> (B, C_upd, H, W): the residual proposed for every updatable channel."""
        p = perceive(x, self.kernels(), self.config.padding)  # (B, C*K, H, W)
        return self.fc2(F.relu(self.fc1(p)))

    def step(self, x: Tensor, fire: Tensor | None) -> Tensor:
        """One NCA step. fire: (B, 1, H, W) 0/1 mask, or None to update every cell."""
        if not self._use_fast(x):
            return self._step_plain(x, fire)
        s = x.permute(0, 2, 3, 1).contiguous()  # (B, H, W, C)
        s = self._fast_step(s, fire, self._fast_weights(), self._needs_grad(x))
        return s.permute(0, 3, 1, 2).contiguous()

    def step_reference(self, x: Tensor, fire: Tensor | None) -> Tensor:
        """:meth:`step` in the plain formulation (the definition the fast path must match)."""
        n_in = self.config.input_channels
        use_alive = self.config.alive_channel is not None
        pre = self.alive(x) if use_alive else None
        dx = self.update(x)
        if fire is not None:
            dx = dx * fire
        y = x[:, n_in:] + dx
        if use_alive:
            full = torch.cat([x[:, :n_in], y], 1) if n_in else y
            y = y * (pre & self.alive(full)).to(y.dtype)  # type: ignore[operator]
        return torch.cat([x[:, :n_in], y], 1) if n_in else y

    def step_gemm(self, x: Tensor, fire: Tensor | None) -> Tensor:
        """:meth:`step_reference` written for a compiler (see :func:`gemm_step`)."""
        return gemm_step(x, fire, *self._gemm_args(self._needs_grad(x)))

    def _gemm_args(self, training: bool) -> tuple[Any, ...]:
        """The weights and constants of :func:`~ncaflow.backends.gemm.gemm_step` after x, fire.

        The Triton MLP skips rows only when training: there the backward, twice the
        forward's work, gains most. In inference choosing the rows cost more than it saved
        (H200, graph-fused, grown state, alternating processes: batch 8 411-414 it/s with
        the skipping against 472-474 without, batch 256 29.1-29.3 against 29.4-29.5)."""
        cfg = self.config
        kernels = self.kernels() if self._plan.taps is None else None
        w1, b1, w2 = self.fc1.weight.flatten(1), self.fc1.bias, self.fc2.weight.flatten(1)
        alive = (cfg.alive_channel, cfg.alive_threshold) if cfg.alive_channel is not None else None
        return (
            kernels,
            w1,
            b1,
            w2,
            self._plan.taps,
            cfg.padding,
            cfg.input_channels,
            alive,
            self._triton_mlp,
            training,
        )

    def _step_plain(self, x: Tensor, fire: Tensor | None) -> Tensor:
        """The step of the non-fast implementations: reference, or step_gemm compiled (on a
        GPU the fused implementation compiles it too, around its Triton MLP)."""
        if self.impl == "fused" and x.device.type != "cuda":
            return self.step_gemm(x, fire)  # Triton's interpreter: no compiler to fuse for
        if self.impl not in ("compiled", "fused"):
            return self.step_reference(x, fire)
        training = self._needs_grad(x)
        step = gemm_step_compiled(self._structure, training)
        return step(x, fire, *self._gemm_args(training))

    # -- rollout ----------------------------------------------------------------

    def fire_mask(self, x: Tensor, generator: torch.Generator | None) -> Tensor | None:
        """(B, 1, H, W) float Bernoulli(fire_rate) mask, or None when every cell fires."""
        rate = self.config.fire_rate
        if rate >= 1.0:
            return None
        b, _, h, w = x.shape
        u = torch.rand(b, 1, h, w, generator=generator, device=x.device, dtype=x.dtype)
        return u.lt_(rate)  # 1.0 where u < rate, else 0.0: one kernel, no bool-to-float copy

    def forward(
        self,
        x: Tensor,
        steps: int,
        *,
        generator: torch.Generator | None = None,
        fire_masks: Tensor | None = None,
        checkpoint_every: int = 0,
        callback: Callable[[int, Tensor], None] | None = None,
    ) -> Tensor:
        """Run ``steps`` steps from state x (B, C, H, W); returns the final state.

        fire_masks: optional (steps, B, 1, H, W) masks to use instead of sampling
        (the C export tests share them). checkpoint_every > 0 recomputes the
        rollout in chunks of that many steps during backward (saves memory; the
        fast path always stores just the state per step, so it ignores it).
        Masks are drawn outside checkpointed chunks, so recomputation is exact.
        callback(t, state) is called after every step (animations).
        """
        if not self._use_fast(x):
            return self._forward_reference(
                x, steps, generator, fire_masks, checkpoint_every, callback
            )
        return self._forward_fast(x, steps, generator, fire_masks, checkpoint_every, callback)

    def _use_fast(self, x: Tensor) -> bool:
        """The fast path on CPU; on a GPU only for large grids (B*H*W > 2**20 cells), where its
        0.12-0.16x memory matters more than its speed: on one H100 it ran 0.4x the eager speed
        at batch 8 (launch-bound), see benchmarks/README.md."""
        plain = self.impl in ("reference", "compiled", "fused")
        if plain or x.dim() != 4 or not x.is_floating_point():
            return False
        if self.impl == "fast" or x.device.type == "cpu":
            return True
        return x.shape[0] * x.shape[2] * x.shape[3] > 2**20

    def _masks(
        self,
        x: Tensor,
        t: int,
        n: int,
        generator: torch.Generator | None,
        fire_masks: Tensor | None,
    ) -> list[Tensor | None]:
        """The fire masks of steps t..t+n-1, drawn in the reference order."""
        if fire_masks is not None:
            return [fire_masks[t + i] for i in range(n)]
        return [self.fire_mask(x, generator) for _ in range(n)]

    def _forward_reference(
        self,
        x: Tensor,
        steps: int,
        generator: torch.Generator | None,
        fire_masks: Tensor | None,
        checkpoint_every: int,
        callback: Callable[[int, Tensor], None] | None,
    ) -> Tensor:
        channels_last = self.impl in ("compiled", "fused")  # what step_gemm reads and writes
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        t = 0
        while t < steps:
            n = min(checkpoint_every, steps - t) if checkpoint_every > 0 else steps - t
            masks = self._masks(x, t, n, generator, fire_masks)
            if checkpoint_every > 0 and torch.is_grad_enabled() and callback is None:
                x = checkpoint(self._chunk, x, *masks, use_reentrant=False)
            else:
                for i, m in enumerate(masks):
                    x = self._step_plain(x, m)
                    if callback is not None:
                        callback(t + i + 1, x)
            t += n
        return x.contiguous() if channels_last else x

    def _forward_fast(
        self,
        x: Tensor,
        steps: int,
        generator: torch.Generator | None,
        fire_masks: Tensor | None,
        checkpoint_every: int,
        callback: Callable[[int, Tensor], None] | None,
    ) -> Tensor:
        """The rollout of :mod:`ncaflow.backends.fast`: masks drawn in the same chunks and order
        as the reference; checkpoint_every > 0 keeps only the state per step."""
        weights, grad = self._fast_weights(), self._needs_grad(x)
        s = x.permute(0, 2, 3, 1).contiguous()  # (B, H, W, C)
        t = 0
        while t < steps:
            n = min(checkpoint_every, steps - t) if checkpoint_every > 0 else steps - t
            for i, m in enumerate(self._masks(x, t, n, generator, fire_masks)):
                s = self._fast_step(s, m, weights, grad)
                if callback is not None:
                    callback(t + i + 1, s.permute(0, 3, 1, 2).contiguous())
            t += n
        return s.permute(0, 3, 1, 2).contiguous()  # (B, C, H, W)

    def _fast_weights(self) -> tuple[Tensor, Tensor, Tensor | None]:
        """(w1a (hidden, K*C + 1) = [fc1 | bias], w2 (C_upd, hidden), kern (K, k, k, C) or None),
        built once per rollout with autograd, so gradients reach fc1, fc2 and filters."""
        cfg = self.config
        c, k_n, hid = cfg.channels, self.n_filters, cfg.hidden_width
        w1 = self.fc1.weight.view(hid, c, k_n).transpose(1, 2).reshape(hid, k_n * c)  # j*C + c
        b1: Tensor = self.fc1.bias  # type: ignore[assignment]
        w1a = torch.cat([w1, b1.unsqueeze(1)], 1)
        w2 = self.fc2.weight.view(self.updated, hid)
        kern = None
        if self._plan.taps is None:
            k = cfg.kernel_size
            kern = self.kernels().view(c, k_n, k, k).permute(1, 2, 3, 0).contiguous()
        return w1a, w2, kern

    def _needs_grad(self, x: Tensor) -> bool:
        return torch.is_grad_enabled() and (
            x.requires_grad or any(p.requires_grad for p in self.parameters())
        )

    def _fast_step(
        self,
        s: Tensor,
        fire: Tensor | None,
        weights: tuple[Tensor, Tensor, Tensor | None],
        grad: bool,
    ) -> Tensor:
        """One fast-path step on a (B, H, W, C) state; fire (B, 1, H, W) or None."""
        b, h, w, _ = s.shape
        f = None if fire is None else fire.to(s.dtype).reshape(b * h * w, 1)
        ws = self._workspace(s)
        if grad:
            y: Tensor = fast.StepFn.apply(s, f, *weights, ws)
            return y
        return fast.step_cl(ws, s, f, *weights)[0]

    def _workspace(self, s: Tensor) -> fast.Workspace:
        """The fast path's scratch memory for states like s, kept for the next rollout of
        the same shape (re-touching fresh pages costs more than the step's elementwise work).
        Rollouts of one model must therefore not run concurrently in several threads."""
        key = (tuple(s.shape), s.dtype, s.device)
        cached = self.__dict__.get("_ws")
        if cached is None or cached[0] != key:
            cached = (key, fast.Workspace(self._plan, s, self.config.hidden_width))
            self.__dict__["_ws"] = cached
        return cached[1]

    def _chunk(self, x: Tensor, *masks: Tensor | None) -> Tensor:
        for m in masks:
            x = self._step_plain(x, m)
        return x
