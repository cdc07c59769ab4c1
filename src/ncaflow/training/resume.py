"""What a training run checkpoints, and resuming from it.

:class:`Run` is what a run trains with (model, task, optimiser, scheduler, random
generators); :class:`Progress` is how far it got. :func:`checkpoint_state` turns both
into the plain structure :mod:`ncaflow.training.checkpoint` stores; :func:`resume` loads it back
into a freshly built run, after checking that it belongs to this run: written on the
same device type, with the same config except ``RESUME_SAFE_KEYS``.

Why a changed config is refused: resuming with a changed value (say a lowered
``train.lr`` after a NaN) gives a run that neither config describes, and its model.json
would claim the new one. The keys in ``RESUME_SAFE_KEYS`` change nothing in the result.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ncaflow.config import ConfigError, RunConfig, to_dict
from ncaflow.tasks import Task
from ncaflow.training.checkpoint import CheckpointError, changed_keys, damaged, read_checkpoint

__all__ = [
    "CHECKPOINT",
    "OLD_CHECKPOINT",
    "RESUME_SAFE_KEYS",
    "Progress",
    "Run",
    "checkpoint_state",
    "clone",
    "resume",
]

CHECKPOINT = "checkpoint.safetensors"
OLD_CHECKPOINT = "checkpoint.pt"  # pickle, written by ncaflow before ncaflow.training.checkpoint
# config keys a resumed run may change: how it shows progress and how many CPU threads it
# uses; train.device is checked as the device type the checkpoint's generators belong to
RESUME_SAFE_KEYS = frozenset({"train.progress", "train.threads", "train.device"})


@dataclass(kw_only=True)
class Run:
    """What one run trains with: built from the config, then resumed in place."""

    config: RunConfig
    out: Path
    device: torch.device
    model: nn.Module
    task: Task
    params: list[nn.Parameter]
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LRScheduler
    data_gen: torch.Generator
    mask_gen: torch.Generator
    use_graphs: bool


@dataclass(kw_only=True)
class Progress:
    """How far a run got; everything but ``lap_start`` goes into the checkpoint."""

    iteration: int = 0  # iterations finished
    best: float = math.nan
    best_iteration: int = -1
    bad_evals: int = 0  # evaluations since the last improvement
    stopped_early: bool = False
    best_state: dict[str, Tensor]
    history: list[dict[str, float]] = field(default_factory=list)
    lap_start: float = field(default_factory=time.perf_counter)  # for history's seconds


def checkpoint_state(run: Run, progress: Progress) -> dict[str, Any]:
    """Everything :func:`resume` needs to go on exactly where ``run`` is now."""
    return {
        "config": to_dict(run.config),
        "device": run.device.type,
        "iteration": progress.iteration,
        "best": progress.best,
        "best_iteration": progress.best_iteration,
        "bad_evals": progress.bad_evals,
        "stopped_early": progress.stopped_early,
        "best_state": progress.best_state,
        "history": progress.history,
        "model": run.model.state_dict(),
        "optimizer": run.opt.state_dict(),
        "scheduler": run.sched.state_dict(),
        "task": run.task.state_dict(),
        "rng": _rng_state(run.data_gen, run.mask_gen),
    }


def resume(run: Run) -> Progress:
    """Load ``out/checkpoint.safetensors`` into ``run`` if there is one; refuse an old
    pickle checkpoint, another device type, or a changed config (except RESUME_SAFE_KEYS)."""
    fresh = Progress(best_state=clone(run.model.state_dict()))
    old = run.out / OLD_CHECKPOINT
    if old.exists():  # never unpickled: a pickle can run code
        raise CheckpointError(
            f"{old}: a checkpoint in the pickle format of older ncaflow versions, which is not "
            "loaded (unpickling can run code); delete it to start over"
        )
    path = run.out / CHECKPOINT
    if not path.exists():
        return fresh
    ckpt = read_checkpoint(path, required=_REQUIRED)
    _check_types(path, ckpt)
    if ckpt["device"] != run.device.type:
        raise ConfigError(
            f"{path} was written while training on {ckpt['device']}, and its random "
            f"number generators cannot continue on {run.device.type}: resume with "
            f"train.device={ckpt['device']}, or delete it to start over"
        )
    changes = changed_keys(ckpt["config"], to_dict(run.config), ignore=RESUME_SAFE_KEYS)
    if changes:
        raise ConfigError(
            f"{path} was written with another config ({'; '.join(changes)}): delete it to "
            "restart with the new config, or run with the old values to resume"
        )
    ckpt = _to_device(ckpt, run.device)  # where torch.load(map_location=device) put them
    try:
        run.model.load_state_dict(ckpt["model"])
        run.opt.load_state_dict(ckpt["optimizer"])
        run.sched.load_state_dict(ckpt["scheduler"])
        run.task.load_state_dict(ckpt["task"])
        _set_rng_state(ckpt["rng"], run.data_gen, run.mask_gen)
        run.model.load_state_dict(ckpt["best_state"])  # checks its names and shapes too
        run.model.load_state_dict(ckpt["model"])
    except (KeyError, IndexError, TypeError, ValueError, RuntimeError) as err:
        why = " ".join(str(err).split())  # torch's messages span lines
        raise damaged(path, f"it does not fit this run: {why}") from None
    return Progress(
        iteration=ckpt["iteration"],
        best=float(ckpt["best"]),
        best_iteration=ckpt["best_iteration"],
        bad_evals=ckpt["bad_evals"],
        stopped_early=ckpt["stopped_early"],
        best_state=ckpt["best_state"],
        history=ckpt["history"],
    )


_REQUIRED = (
    "config",
    "device",
    "iteration",
    "best",
    "best_iteration",
    "bad_evals",
    "stopped_early",
    "best_state",
    "history",
    "model",
    "optimizer",
    "scheduler",
    "task",
    "rng",
)
_TYPES: dict[str, type | tuple[type, ...]] = {
    "config": dict,
    "device": str,
    "iteration": int,
    "best": (int, float),
    "best_iteration": int,
    "bad_evals": int,
    "stopped_early": bool,
    "best_state": dict,
    "history": list,
    "model": dict,
    "rng": dict,
}


def _check_types(path: Path, ckpt: dict[str, Any]) -> None:
    for key, kind in _TYPES.items():
        if not isinstance(ckpt[key], kind):
            raise damaged(path, f"{key!r} holds a {type(ckpt[key]).__name__}")


def _to_device(obj: Any, device: torch.device) -> Any:
    if isinstance(obj, Tensor):
        return obj.to(device)
    if isinstance(obj, dict):
        return {k: _to_device(v, device) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_device(v, device) for v in obj)
    return obj


def clone(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """A copy of a state dict that later training steps leave alone."""
    return {k: v.detach().clone() for k, v in state.items()}


def _rng_state(data_gen: torch.Generator, mask_gen: torch.Generator) -> dict[str, Any]:
    """Every random generator a run draws from, as tensors and JSON-able lists."""
    name, keys, pos, has_gauss, gauss = np.random.get_state(legacy=True)
    version, internal, gauss_next = random.getstate()
    return {
        "data": data_gen.get_state(),
        "mask": mask_gen.get_state(),
        "torch": torch.get_rng_state(),
        "numpy": [name, np.asarray(keys).tolist(), pos, has_gauss, gauss],
        "python": [version, list(internal), gauss_next],
    }


def _set_rng_state(
    state: dict[str, Any], data_gen: torch.Generator, mask_gen: torch.Generator
) -> None:
    # generator states are CPU byte tensors, whatever device the checkpoint was mapped to
    data_gen.set_state(state["data"].cpu())
    mask_gen.set_state(state["mask"].cpu())
    torch.set_rng_state(state["torch"].cpu())
    name, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), pos, has_gauss, gauss))
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
