"""How much memory a run will need, checked before anything is allocated.

Every size that reaches an allocation comes from a config, a model file or a command
line, so from someone who may have typed ``data.size: 1000000``. :func:`check_memory`
estimates what a training run holds at its peak and :func:`check_bytes` refuses any
other estimate (frames of an animation, C buffers of a size report) that exceeds this
machine's memory (RAM, or the GPU's memory on CUDA), in one line that names the key
to lower and the estimate. The estimates count the large tensors only; they are meant
to stop a run that cannot fit, not to predict its peak to the byte.
"""

from __future__ import annotations

import os
from typing import Any

import torch

from ncaflow.config import MAX_SIDE, ConfigError, RunConfig
from ncaflow.model.nca import mlp_sizes

__all__ = ["MAX_SIDE", "check_bytes", "check_memory", "human", "machine_memory", "train_bytes"]

_FLOAT = 4  # bytes of a float32
_CHUNK = 8  # steps kept together with train.gradient_checkpointing (train.ROLLOUT_CHUNK)


def human(n: float) -> str:
    """``1.2 GB``-style text of a byte count (powers of 1000)."""
    for unit in ("B", "kB", "MB", "GB", "TB", "PB"):
        if abs(n) < 1000 or unit == "PB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")


def machine_memory(device: torch.device | str = "cpu") -> tuple[int, str]:
    """(bytes, what): the GPU's memory on CUDA, else the machine's physical RAM."""
    device = torch.device(device)
    if device.type == "cuda" and torch.cuda.is_available():
        props = torch.cuda.get_device_properties(device)
        return int(props.total_memory), f"{props.name}'s GPU memory"
    try:
        import psutil

        return int(psutil.virtual_memory().total), "RAM"
    except ImportError:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")), "RAM"


def check_bytes(need: float, *, key: str, what: str, fix: str, device: Any = "cpu") -> None:
    """Raise ConfigError when ``need`` bytes exceed this machine's memory."""
    have, where = machine_memory(device)
    if need > have:
        raise ConfigError(
            f"key '{key}': {what} needs about {human(need)}, more than this machine's "
            f"{human(have)} of {where}; {fix}",
            key,
        )


def _grid(config: RunConfig) -> tuple[int, int]:
    from ncaflow.tasks import get_task

    size = get_task(config.task).grid_size(dict(config.data), {})
    return size if size is not None else (64, 64)


def train_bytes(config: RunConfig) -> tuple[float, str]:
    """(bytes, key): a training run's estimated peak and the key that drives it most.

    Peak: the activations kept for the backward pass, per cell and step the state, its
    perception and the MLP's hidden layer (``B x steps x H x W x (C + P + 2 hidden)``;
    with gradient checkpointing only a chunk of steps), plus the pool of states, the
    evaluation batch, and the weights with gradient and two Adam moments.
    """
    m, t, d = config.model, config.train, config.data
    h, w = _grid(config)
    perceived, hidden, updated = mlp_sizes(m)
    steps = min(t.steps[-1], _CHUNK) if t.gradient_checkpointing else t.steps[-1]
    per_cell = m.channels + perceived + 2 * hidden + updated
    kept = t.batch_size * steps * h * w * per_cell * _FLOAT
    pool = int(d.get("pool_size", 0) or 0) * m.channels * h * w * _FLOAT
    eval_batch = int(d.get("eval_batch", 1) or 1) * h * w * (2 * per_cell) * _FLOAT
    weights = 4 * (perceived * hidden + hidden * updated) * _FLOAT
    total = float(kept + pool + eval_batch + weights)
    # the key whose value is furthest above its usual size takes the blame
    usual = {
        "train.steps": (t.steps[-1], 96),
        "train.batch_size": (t.batch_size, 8),
        "data.size": (max(h, w), 72),
        "model.hidden_width": (hidden, 128),
        "model.hidden_channels": (m.hidden_channels, 16),
        "data.pool_size": (int(d.get("pool_size", 0) or 0), 1024),
        "data.eval_batch": (int(d.get("eval_batch", 0) or 0), 128),
    }
    key = max(usual, key=lambda k: usual[k][0] / usual[k][1])
    return total, key


def check_memory(config: RunConfig, device: torch.device | str = "cpu") -> None:
    """Refuse a training run whose estimated peak exceeds this machine's memory."""
    need, key = train_bytes(config)
    h, w = _grid(config)
    check_bytes(
        need,
        key=key,
        what=(
            f"training ({h}x{w} grid, batch {config.train.batch_size}, "
            f"{config.train.steps[-1]} steps kept for the backward pass)"
        ),
        fix=f"lower {key} (or set train.gradient_checkpointing: true)",
        device=device,
    )
