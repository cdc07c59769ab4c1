"""What a cell sees of its neighbours: the perception filter banks (the depthwise
perception, edge padding and the 3x3 alive test that every step shares are
:mod:`ncaflow.backends.stencil`).

A model config names its perception (``model.perception``); fixed banks are looked up
in :data:`BANKS`, a registry that a new bank joins with :func:`register_bank`, and
``"learned"`` means per-channel filters trained with the model (the identity plus
``model.learned_filters`` of them, :class:`ncaflow.model.nca.NCA`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from ncaflow.config import check

__all__ = [
    "BANKS",
    "LEARNED",
    "check_perception",
    "filter_bank",
    "fixed_filters",
    "n_filters",
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
