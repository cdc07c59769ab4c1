"""The neural cellular automaton: perception, update rule, fire and alive masks, rollout.

State layout, ``(B, C, H, W)`` with ``C = input + output + hidden`` channels::

    [ input (frozen) | output | hidden ]

One step::

    p  = perceive(x)                      (B, C*K, H, W)   K filters per channel
    dx = W2 @ relu(W1 @ p + b1)           (B, C_upd, H, W) 1x1 convs, W2 starts at 0
    x[:, input:] += dx * fire             fire ~ Bernoulli(fire_rate), (B, 1, H, W)
    x[:, input:] *= alive_before & alive_after   (optional, Distill alive masking)

With ``model.step_channel = T > 0`` the perception vector gets one more entry, t / T at
step t (0 at the first step), the same for every cell: W1 @ [p, t/T] = W1 @ p + w_t * t/T,
so the step is the plain one with the bias b1 + w_t * t/T (``step_w`` holds w_t).
With ``model.adaptive_steps`` an inference rollout stops per sample once its state
settles (:mod:`ncaflow.model.adaptive`); training always runs the steps it asks for.

Nothing here knows about tasks.

``step`` and ``forward`` run on the backend chosen when the model is built
(:mod:`ncaflow.backends.registry`: the CPU fast path, the compiled or Triton-fused step),
to which the model hands its weights (:meth:`NCA.weights`); the plain formulation below
stays the definition (``impl="reference"``). All agree to float rounding.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ncaflow.backends import fast
from ncaflow.backends.base import Weights, needs_grad
from ncaflow.backends.gemm import gemm_step
from ncaflow.backends.registry import gemm_args, get_backend
from ncaflow.backends.stencil import alive_planes, perceive
from ncaflow.config import ModelConfig
from ncaflow.model.adaptive import Stopper
from ncaflow.model.perception import check_perception, filter_bank, n_filters, taps

__all__ = ["MASK_BLOCK_CELLS", "NCA", "mlp_sizes"]

# the most cells whose fire masks a rollout draws in one call (:meth:`NCA.masks`): 32 MB
MASK_BLOCK_CELLS = 1 << 23


def mlp_sizes(config: ModelConfig) -> tuple[int, int, int]:
    """The update MLP's (inputs, hidden, outputs): the perception channels, hidden_width and
    the updated channels."""
    k = n_filters(config.perception, config.learned_filters)
    updated = config.output_channels + config.hidden_channels
    return config.channels * k, config.hidden_width, updated


class NCA(nn.Module):
    """A single-scale NCA built from a :class:`~ncaflow.config.ModelConfig`.

    impl names the backend (:mod:`ncaflow.backends.registry`), chosen once:
    "auto" (fast path on CPU and for large GPU grids), "fast",
    "reference" (the plain formulation, kept as the definition and for tests),
    "compiled" (:meth:`step_gemm` through torch.compile: fused kernels for GPUs) or
    "fused" (:meth:`step_gemm` with the MLP as Triton kernels, :mod:`ncaflow.backends.fused`, where
    its sizes fit them, and on a GPU the rest of the step through torch.compile).
    All give the same results up to float rounding and draw the same masks.
    """

    def __init__(self, *, config: ModelConfig, impl: str = "auto") -> None:
        super().__init__()
        config.validate()
        check_perception(config.perception)
        self.config = config
        self.backend = get_backend(impl)
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
        self.time = 0.0  # t / T of the step about to run (model.step_channel)
        self.steps_taken: Tensor | None = None  # (B,) of the last adaptive rollout
        if config.step_channel:  # fc1's column for the step entry, initialised as fc1's
            bound = 1.0 / (sizes[0] + 1) ** 0.5
            self.step_w = nn.Parameter(torch.empty(sizes[1]).uniform_(-bound, bound))
        self.plan = self._make_plan()
        self.triton_mlp = self.backend.triton_mlp(sizes)  # fixed by the shapes
        # what the compiled step's graphs depend on besides input shapes (gemm_step_compiled)
        self.structure = (config, self.triton_mlp)
        self.scratch: dict[str, Any] = {}  # the backend's memory between rollouts

    @property
    def impl(self) -> str:
        """The name of the backend this model runs on."""
        return self.backend.name

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
        if self.plan.taps is not None:  # a fixed bank
            bank: Tensor = self.bank  # type: ignore[assignment]
            return bank
        c, n, k = self.config.channels, self.config.learned_filters, self.config.kernel_size
        ident = torch.zeros(c, 1, 1, k, k, device=self.filters.device, dtype=self.filters.dtype)
        ident[..., k // 2, k // 2] = 1.0
        learned = self.filters.view(c, n, 1, k, k)
        return torch.cat([ident, learned], dim=1).view(c * (n + 1), 1, k, k)

    def weights(self) -> Weights:
        """The update rule's weights as a backend takes them (views: gradients reach them)."""
        kernels = self.kernels() if self.plan.taps is None else None
        b1: Tensor = self.fc1.bias  # type: ignore[assignment]
        if self.config.step_channel:
            b1 = b1 + self.step_w * self.time
        return Weights(
            w1=self.fc1.weight.flatten(1), b1=b1, w2=self.fc2.weight.flatten(1), kernels=kernels
        )

    def alive(self, x: Tensor) -> Tensor:
        """(B, C, H, W) -> (B, 1, H, W) bool: some 3x3 neighbour's alpha exceeds the threshold."""
        assert self.config.alive_channel is not None
        channel = self.config.alive_channel
        return alive_planes(x[:, channel : channel + 1], self.config.alive_threshold)

    def update(self, x: Tensor) -> Tensor:
        """(B, C, H, W) -> (B, C_upd, H, W): the residual proposed for every updatable channel."""
        p = perceive(x, self.kernels(), self.config.padding)  # (B, C*K, H, W)
        h = self.fc1(p)  # (B, hidden_width, H, W)
        if self.config.step_channel:
            h = h + (self.step_w * self.time).view(1, -1, 1, 1)
        return self.fc2(F.relu(h))

    def step(self, x: Tensor, fire: Tensor | None) -> Tensor:
        """One NCA step. fire: (B, 1, H, W) 0/1 mask, or None to update every cell."""
        return self.backend.pick(x).step(self, x, fire)

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
        return gemm_step(x, fire, *gemm_args(self, needs_grad(self, x)))

    # -- rollout ----------------------------------------------------------------

    def _draw_fire(self, x: Tensor, steps: int, generator: torch.Generator | None) -> Tensor:
        """(steps, B, 1, H, W) float Bernoulli(fire_rate) masks in one draw. On a CPU they are
        those of ``steps`` draws of one step each (its generator fills a tensor in order:
        tested)."""
        b, _, h, w = x.shape
        u = torch.rand(steps, b, 1, h, w, generator=generator, device=x.device, dtype=x.dtype)
        return u.lt_(self.config.fire_rate)  # 1.0 where u < rate: one kernel, no bool copy

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
        adaptive = self.config.adaptive_steps
        stopper = None
        if adaptive is not None and not torch.is_grad_enabled():  # inference only
            stopper = Stopper(rule=adaptive, batch=x.shape[0], device=x.device)
        # a rollout that may stop early draws a step's masks at a time, so that the
        # generator is left where the steps it took leave it
        masks = self.masks(x, steps, generator, fire_masks, ahead=stopper is None)
        self.steps_taken = None
        if self.config.step_channel or stopper is not None:
            return self._stepwise_rollout(x, masks, callback, stopper)
        return self.backend.pick(x).rollout(self, x, masks, callback, checkpoint_every)

    def _stepwise_rollout(
        self,
        x: Tensor,
        masks: Iterator[Tensor | None],
        callback: Callable[[int, Tensor], None] | None,
        stopper: Stopper | None,
    ) -> Tensor:
        """The rollout one backend step at a time: with ``model.step_channel`` each step
        has its own t / T (the backends gather the weights, and so the bias, at every step;
        gradient checkpointing does not apply); with a ``stopper`` (``model.adaptive_steps``)
        each sample stops once settled (:mod:`ncaflow.model.adaptive`), its steps in
        ``self.steps_taken`` (B,). Every step's fire masks are drawn for the whole batch,
        so a sample's masks do not depend on when the others stopped."""
        backend = self.backend.pick(x)
        period = self.config.step_channel
        first_updated = self.config.input_channels
        try:
            for t, mask in enumerate(masks):
                self.time = t / period if period else 0.0
                y = backend.step(self, x, mask)
                if stopper is not None:
                    y = stopper.advance(x, y, first_updated)
                x = y
                if callback is not None:
                    callback(t + 1, x)
                if stopper is not None and not stopper.active.any():
                    break
        finally:
            self.time = 0.0
        if stopper is not None:
            self.steps_taken = stopper.taken
        return x

    def masks(
        self,
        x: Tensor,
        steps: int,
        generator: torch.Generator | None = None,
        fire_masks: Tensor | None = None,
        *,
        ahead: bool = True,
    ) -> Iterator[Tensor | None]:
        """The fire masks of a rollout from x, one per step, in the order every backend uses:
        fire_masks[t] when given, else drawn from generator, step after step.

        ahead: draw the masks of several steps at once (up to :data:`MASK_BLOCK_CELLS`
        cells), two kernels a block instead of two a step (growing batch-8 training on an
        H100: 209 -> 222 it/s); else one step's at a time. On a CPU both give the same
        values; a CUDA generator's differ.
        """
        if fire_masks is not None or self.config.fire_rate >= 1.0:
            for t in range(steps):
                yield None if fire_masks is None else fire_masks[t]
            return
        b, _, h, w = x.shape
        block = max(1, MASK_BLOCK_CELLS // (b * h * w)) if ahead else 1
        for t in range(0, steps, block):
            yield from self._draw_fire(x, min(block, steps - t), generator).unbind(0)
