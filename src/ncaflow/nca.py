"""The neural cellular automaton: perception, update rule, fire and alive masks, rollout.

State layout, ``(B, C, H, W)`` with ``C = input + output + hidden`` channels::

    [ input (frozen) | output | hidden ]

One step::

    p  = perceive(x)                      (B, C*K, H, W)   K filters per channel
    dx = W2 @ relu(W1 @ p + b1)           (B, C_upd, H, W) 1x1 convs, W2 starts at 0
    x[:, input:] += dx * fire             fire ~ Bernoulli(fire_rate), (B, 1, H, W)
    x[:, input:] *= alive_before & alive_after   (optional, Distill alive masking)

Nothing here knows about tasks.

``forward`` runs the fast path of :mod:`ncaflow.fast` (channels-last state, GEMMs,
a hand-written backward that stores little per step) and falls back to the
reference formulation below, which stays the definition (``impl="reference"``).
The two agree to float rounding; tests/test_nca_fast.py checks it.
"""

from __future__ import annotations

import functools
import itertools
import types
import warnings
from collections.abc import Callable, Hashable
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from ncaflow import fast, fused
from ncaflow.config import ModelConfig

__all__ = ["NCA", "Impl", "fixed_filters", "perceive"]

Impl = Literal["auto", "fast", "reference", "compiled", "fused"]

_SOBEL_X = [[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]]
_LAPLACE = [[1.0, 2.0, 1.0], [2.0, -12.0, 2.0], [1.0, 2.0, 1.0]]


def fixed_filters(laplace: bool = False) -> Tensor:
    """Identity, Sobel x/8, Sobel y/8 (and Laplace/16) as a ``(K, 3, 3)`` bank."""
    ident = torch.zeros(3, 3)
    ident[1, 1] = 1.0
    sx = torch.tensor(_SOBEL_X) / 8.0
    bank = [ident, sx, sx.T]
    if laplace:
        bank.append(torch.tensor(_LAPLACE) / 16.0)
    return torch.stack(bank)


def _pad_edges(x: Tensor, padding: str, r: int = 1, dims: tuple[int, int] = (2, 3)) -> Tensor:
    """Pad the two spatial dims of x (``dims``: (2, 3) for (B, C, H, W), (1, 2) for
    (B, H, W, C)) by r on both sides, as ``F.pad(x, (r, r, r, r), mode)`` does: F.pad itself
    where it can (eager, the last two dims), else :func:`_pad_by_slices`."""
    last_two = dims == (x.dim() - 2, x.dim() - 1)
    if padding == "zeros" or (last_two and not torch.compiler.is_compiling()):
        pad = (0, 0) * (x.dim() - 1 - dims[1]) + (r, r, r, r)
        return F.pad(x, pad, mode="constant" if padding == "zeros" else padding)
    return _pad_by_slices(x, padding, r, dims)


def _pad_by_slices(x: Tensor, padding: str, r: int, dims: tuple[int, int]) -> Tensor:
    """:func:`_pad_edges` (bit for bit) as slices and concatenations, for any dims and the
    circular, reflect and replicate modes (zeros is F.pad everywhere), which
    torch.compile lowers for every padding: Inductor (PyTorch 2.11, CUDA) failed on F.pad's
    replicate mode with "The argument '((-19)) + 1' is not comparable". Eager, F.pad is faster
    (2 CPU threads, 8 x 16 x 72 x 72: 60-78 µs against 171-200 µs for the three modes)."""
    for dim in dims:
        n = x.shape[dim]
        if padding == "circular":
            first, last = x.narrow(dim, n - r, r), x.narrow(dim, 0, r)
        elif padding == "reflect":
            first, last = x.narrow(dim, 1, r).flip(dim), x.narrow(dim, n - 1 - r, r).flip(dim)
        else:  # replicate
            first = x.narrow(dim, 0, 1).repeat_interleave(r, dim)
            last = x.narrow(dim, n - 1, 1).repeat_interleave(r, dim)
        x = torch.cat([first, x, last], dim)
    return x


def perceive(x: Tensor, kernels: Tensor, padding: str) -> Tensor:
    """Depthwise-convolve every channel with every kernel.

    x: (B, C, H, W), kernels: (C*K, 1, k, k) -> (B, C*K, H, W); output channel
    ``c*K + j`` is channel ``c`` seen through kernel ``j``.
    """
    x = _pad_edges(x, padding, kernels.shape[-1] // 2)
    return F.conv2d(x, kernels, groups=x.shape[1])


def _alive(x: Tensor, channel: int, threshold: float) -> Tensor:
    return _alive_planes(x[:, channel : channel + 1], threshold)


def _alive_planes(a: Tensor, threshold: float) -> Tensor:
    """Per plane of a (B, P, H, W): whether the 3x3 neighbourhood's maximum exceeds the
    threshold (outside the grid counts as dead)."""
    return F.max_pool2d(a, 3, stride=1, padding=1) > threshold


def _gemm_step(
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
    """One step of :meth:`NCA.step_reference` written for a compiler: fixed filters (taps) as
    shifted slices, one fused stencil instead of a depthwise convolution, and the 1x1
    convolutions as row-major GEMMs over the cells (or the Triton MLP; with skip_rows it
    computes only the rows of :func:`_rows_that_matter`). Same function, different
    rounding. It works on the state channels-last, (B, H, W, C) in memory, so that the
    cells are the GEMM's rows with no transposing copy; the result is (B, C, H, W) with
    channels-last strides, and a rollout keeps the state so (:meth:`NCA._forward_reference`).

    A free function of tensors and plain constants, so that models of one structure share
    its compiled graphs (:func:`_gemm_step_compiled`).
    """
    b, _, h, w = x.shape
    s = x.permute(0, 2, 3, 1)  # (B, H, W, C): a free view of the rollout's channels-last state
    if taps is None:
        assert kernels is not None
        p = perceive(x, kernels, padding).permute(0, 2, 3, 1)  # (B, H, W, C*K)
    else:
        p = _Stencil.apply(_pad_edges(s, padding, dims=(1, 2)), taps)  # (B, H, W, C, K)
    rows = p.reshape(b * h * w, -1)
    if triton_mlp and skip_rows:
        out = fused.fused_mlp(rows, w1, b1, w2, _rows_that_matter(s, fire, alive))
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


def _rows_that_matter(
    s: Tensor, fire: Tensor | None, alive: tuple[int, float] | None
) -> Tensor | None:
    """(B, H, W) 0/1 mask of the cells whose update can change the step's result, for the
    fused MLP to skip the others (None: every cell): cells that fire and, with alive
    masking, lie within two cells of an alive one. Farther cells and their neighbours are
    dead before the step, so the alive mask zeroes them whatever their update (the rule of
    the CPU fast path, :func:`ncaflow.fast.step_cl`). s is the (B, H, W, C) state."""
    keep = None if fire is None else fire.view(fire.shape[0], *fire.shape[2:])
    if alive is None:
        return keep
    channel, threshold = alive
    # the 5 x 5 maximum (3 x 3 twice) as 1 x 5 then 5 x 1: Inductor makes a 5 x 5 window a
    # reduction kernel, 72 µs a step at batch 256 on an H200 against 5 µs for the two
    across = F.max_pool2d(s[..., channel], (1, 5), stride=1, padding=(0, 2))
    near = F.max_pool2d(across, (5, 1), stride=1, padding=(2, 0)) > threshold
    return near.to(s.dtype) if keep is None else keep * near


class _Stencil(torch.autograd.Function):
    """The fixed filters of a padded (B, H+2, W+2, C) state as (B, H, W, C, K), channel
    c*K + j as :func:`perceive` orders them, with the adjoint written out
    (:func:`ncaflow.fast.tap_adjoint`, which the CPU fast path compiles too). On an H200 at
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
    live = _alive_planes(torch.stack([before[..., channel], after[..., channel]], 1), threshold)
    return (live[:, 0] & live[:, 1]).view(b, h, w, 1)


_STRUCTURES = itertools.count()  # numbers the copies of _gemm_step's code


@functools.cache
def _gemm_step_compiled(structure: Hashable, training: bool) -> Callable[..., Tensor]:
    """:func:`_gemm_step` through torch.compile for one model structure (its ModelConfig and
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
    name = f"_gemm_step_{next(_STRUCTURES)}"
    code = _gemm_step.__code__.replace(co_name=name, co_qualname=name)  # same body
    fn = types.FunctionType(code, _gemm_step.__globals__, name)
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


def mlp_sizes(config: ModelConfig) -> tuple[int, int, int]:
    """The update MLP's (inputs, hidden, outputs): the perception channels, hidden_width and
    the updated channels."""
    if config.perception == "learned":
        n_filters = 1 + config.learned_filters  # the identity and the learned filters
    else:
        n_filters = fixed_filters(laplace=config.perception == "sobel_laplace").shape[0]
    updated = config.output_channels + config.hidden_channels
    return config.channels * n_filters, config.hidden_width, updated


class NCA(nn.Module):
    """A single-scale NCA built from a :class:`~ncaflow.config.ModelConfig`.

    impl: "auto" (fast path on CPU and for large GPU grids, see _use_fast), "fast",
    "reference" (the plain formulation, kept as the definition and for tests),
    "compiled" (:meth:`step_gemm` through torch.compile: fused kernels for GPUs) or
    "fused" (:meth:`step_gemm` with the MLP as Triton kernels, :mod:`ncaflow.fused`, where
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
        if config.perception == "learned":
            k = config.kernel_size
            learned = torch.randn(c * config.learned_filters, 1, k, k) * (1.0 / k)
            self.filters = nn.Parameter(learned)
        else:
            bank = fixed_filters(laplace=config.perception == "sobel_laplace")
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
        # what the compiled step's graphs depend on besides input shapes (_gemm_step_compiled)
        self._structure = (config, self._triton_mlp)

    def _make_plan(self) -> fast.Plan:
        cfg = self.config
        taps = None
        if cfg.perception != "learned":
            taps = tuple(
                tuple(
                    (dy, dx, float(f[dy, dx]))
                    for dy in range(3)
                    for dx in range(3)
                    if f[dy, dx] != 0
                )
                for f in fixed_filters(laplace=cfg.perception == "sobel_laplace")
            )
        k = cfg.kernel_size if cfg.perception == "learned" else 3
        return fast.Plan(
            input_channels=cfg.input_channels,
            n_filters=self.n_filters,
            radius=k // 2,
            padding=cfg.padding,
            alive_channel=cfg.alive_channel,
            alive_threshold=cfg.alive_threshold,
            taps=taps,
        )

    # -- one step ---------------------------------------------------------------

    def kernels(self) -> Tensor:
        """The perception bank as ``(C*K, 1, k, k)`` depthwise weights."""
        if self.config.perception != "learned":
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
        return _alive(x, self.config.alive_channel, self.config.alive_threshold)

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
        """:meth:`step_reference` written for a compiler (see :func:`_gemm_step`)."""
        return _gemm_step(x, fire, *self._gemm_args(self._needs_grad(x)))

    def _gemm_args(self, training: bool) -> tuple[Any, ...]:
        """The weights and constants of :func:`_gemm_step`, after ``x`` and ``fire``.

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
        step = _gemm_step_compiled(self._structure, training)
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
        """The rollout of :mod:`ncaflow.fast`: masks drawn in the same chunks and order
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
        """One step of :mod:`ncaflow.fast` on a (B, H, W, C) state; fire (B, 1, H, W) or None."""
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
