"""What a cell sees of its neighbours: the perception filter banks, edge padding, the
depthwise perception itself and the alive test of a 3x3 neighbourhood.

A model config names its perception (``model.perception``); fixed banks are looked up
in :data:`BANKS`, a registry that a new bank joins with :func:`register_bank`, and
``"learned"`` means per-channel filters trained with the model (the identity plus
``model.learned_filters`` of them, :class:`ncaflow.model.nca.NCA`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from ncaflow.config import check

__all__ = [
    "BANKS",
    "LEARNED",
    "alive_planes",
    "check_perception",
    "filter_bank",
    "fixed_filters",
    "n_filters",
    "pad_edges",
    "perceive",
    "register_bank",
    "taps",
]

LEARNED = "learned"

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


# name -> (K, 3, 3) bank of fixed filters, the identity first
BANKS: dict[str, Callable[[], Tensor]] = {
    "sobel": fixed_filters,
    "sobel_laplace": lambda: fixed_filters(laplace=True),
}


def register_bank(name: str, make: Callable[[], Tensor]) -> None:
    """Make ``model.perception: name`` use the (K, 3, 3) bank ``make()`` returns."""
    if name == LEARNED:
        raise ValueError(f"{LEARNED!r} names the trained filters; pick another name")
    BANKS[name] = make


def check_perception(perception: str, key: str = "model.perception") -> None:
    """Raise ConfigError ``key '<key>': must be one of [...]`` unless a bank or learned."""
    names = sorted([*BANKS, LEARNED])
    check(perception in names, key, f"must be one of {names}")


def filter_bank(perception: str) -> Tensor | None:
    """The fixed (K, 3, 3) bank of a perception name, or None for learned filters."""
    if perception == LEARNED:
        return None
    if perception not in BANKS:
        raise ValueError(
            f"unknown perception {perception!r}; choose one of {sorted([*BANKS, LEARNED])}"
        )
    return BANKS[perception]()


def n_filters(perception: str, learned_filters: int) -> int:
    """How many filters see each channel: the bank's size, or 1 + the learned ones."""
    bank = filter_bank(perception)
    return 1 + learned_filters if bank is None else int(bank.shape[0])


def taps(bank: Tensor) -> tuple[tuple[tuple[int, int, float], ...], ...]:
    """The non-zero ``(dy, dx, weight)`` taps of every 3x3 filter of a fixed bank."""
    return tuple(
        tuple((dy, dx, float(f[dy, dx])) for dy in range(3) for dx in range(3) if f[dy, dx] != 0)
        for f in bank
    )


def pad_edges(x: Tensor, padding: str, r: int = 1, dims: tuple[int, int] = (2, 3)) -> Tensor:
    """Pad the two spatial dims of x (``dims``: (2, 3) for (B, C, H, W), (1, 2) for
    (B, H, W, C)) by r on both sides, as ``F.pad(x, (r, r, r, r), mode)`` does: F.pad itself
    where it can (eager, the last two dims), else :func:`pad_by_slices`."""
    last_two = dims == (x.dim() - 2, x.dim() - 1)
    if padding == "zeros" or (last_two and not torch.compiler.is_compiling()):
        pad = (0, 0) * (x.dim() - 1 - dims[1]) + (r, r, r, r)
        return F.pad(x, pad, mode="constant" if padding == "zeros" else padding)
    return pad_by_slices(x, padding, r, dims)


def pad_by_slices(x: Tensor, padding: str, r: int, dims: tuple[int, int]) -> Tensor:
    """:func:`pad_edges` (bit for bit) as slices and concatenations, for any dims and the
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
    x = pad_edges(x, padding, kernels.shape[-1] // 2)
    return F.conv2d(x, kernels, groups=x.shape[1])


def alive_planes(a: Tensor, threshold: float) -> Tensor:
    """Per plane of a (B, P, H, W): whether the 3x3 neighbourhood's maximum exceeds the
    threshold (outside the grid counts as dead)."""
    return F.max_pool2d(a, 3, stride=1, padding=1) > threshold
