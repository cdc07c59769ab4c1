"""One training engine for every task.

``train(config, out_dir)`` runs the loop and leaves in ``out_dir``::

    model.safetensors, model.json   best weights by the validation metric (written last)
    last.safetensors, last.json     weights after the final iteration
    history.csv                     one row per evaluation
    tensorboard/                    scalars and image previews
    checkpoint.safetensors          resumable state while running; removed on success
    train.lock                      held while running (one trainer per folder)

On a CUDA device each iteration (rollout, loss, backward, optimiser step) is
replayed as a CUDA graph, see :mod:`ncaflow.backends.graphs` (``train.cuda_graphs``).

A run killed at any point (Ctrl-C, SIGTERM, SIGKILL, a crash) and started again
with the same arguments resumes from the checkpoint (model, optimiser, scheduler,
RNG states, sample pool, history; no pickle: :mod:`ncaflow.training.checkpoint`) and, on
CPU, ends bit-identical to an uninterrupted run. Resuming with a changed config is
refused with the changed keys, except ``RESUME_SAFE_KEYS`` (:mod:`ncaflow.training.resume`).
``train.reproducible: true`` on a CPU needs the kernels of :mod:`ncaflow.runtime.reproducible`
(same bytes on any x86-64 CPU); model.json's ``meta.environment`` records what ran.
Ctrl-C and SIGTERM end in :class:`TrainingInterrupted`, a full or read-only disk in
one :class:`TrainingError` line; neither leaves model.* behind.
"""

from __future__ import annotations

import errno
import json
import math
import random
import shutil
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, closing, contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn
from tqdm import tqdm

from ncaflow.backends import Impl
from ncaflow.backends.base import Backend
from ncaflow.backends.graphs import GraphedIteration, graphs_supported
from ncaflow.backends.registry import get_backend
from ncaflow.config import ConfigError, RunConfig, TrainConfig, to_dict
from ncaflow.guard.io import atomic_write, load, model_paths, save
from ncaflow.guard.limits import check_memory
from ncaflow.model.cascade import build_model
from ncaflow.model.nca import mlp_sizes
from ncaflow.runtime import reproducible
from ncaflow.runtime.safe_io import clip, no_symlink
from ncaflow.tasks import Batch, Task, get_task
from ncaflow.training.board import Board
from ncaflow.training.checkpoint import changed_keys, write_checkpoint
from ncaflow.training.lock import folder_lock
from ncaflow.training.objective import objective
from ncaflow.training.readback import LossReadback, current_lr
from ncaflow.training.resume import (
    CHECKPOINT,
    RESUME_SAFE_KEYS,
    Progress,
    Run,
    checkpoint_state,
    clone,
    resume,
)

__all__ = [
    "CHECKPOINT",
    "RESUME_SAFE_KEYS",
    "TrainResult",
    "TrainingError",
    "TrainingInterrupted",
    "build_optimizer",
    "build_scheduler",
    "select_device",
    "train",
]

ROLLOUT_CHUNK = 8  # train.gradient_checkpointing: steps recomputed together in backward


class TrainingError(RuntimeError):
    """Training cannot go on (for example the loss became NaN, or the disk is full)."""


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM stopped training; the message says how to resume."""


@dataclass(kw_only=True)
class TrainResult:
    out_dir: Path
    iterations: int
    best_metric: float
    best_iteration: int
    stopped_early: bool
    history: list[dict[str, float]]
    seconds: float


def select_device(name: str = "auto", key: str = "key 'train.device'") -> torch.device:
    """``auto`` picks cuda, then mps, then cpu; ``key`` names the setting in errors."""
    if name != "auto":
        try:
            device = torch.device(name)
        except (RuntimeError, ValueError):  # torch's text lists every device type it knows
            raise ConfigError(
                f"{key}: {clip(name)} is not a device; use auto, cpu, cuda, cuda:N or mps",
                "train.device",
            ) from None
        if device.type not in ("cpu", "cuda", "mps"):
            raise ConfigError(
                f"{key}: ncaflow runs on cpu, cuda or mps, not {device.type}; use auto or cpu",
                "train.device",
            )
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ConfigError(
                f"{key}: {name!r}, but this PyTorch sees no CUDA device; use 'auto' or 'cpu'",
                "train.device",
            )
        if device.type == "mps" and not torch.backends.mps.is_available():
            raise ConfigError(
                f"{key}: {name!r}, but this PyTorch sees no MPS device; use 'auto' or 'cpu'",
                "train.device",
            )
        return device
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def build_optimizer(
    params: list[nn.Parameter], cfg: TrainConfig, *, capturable: bool = False
) -> torch.optim.Optimizer:
    """The configured optimiser; ``capturable`` (Adam/AdamW on CUDA) keeps its step count and
    learning rate in device tensors, so that a CUDA graph can replay ``step()``."""
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(
            params, lr=cfg.lr, momentum=cfg.betas[0], weight_decay=cfg.weight_decay
        )
    cls = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
    betas = (cfg.betas[0], cfg.betas[1])
    if capturable:
        lr = torch.tensor(cfg.lr, device=params[0].device)
        return cls(params, lr=lr, betas=betas, weight_decay=cfg.weight_decay, capturable=True)
    return cls(params, lr=cfg.lr, betas=betas, weight_decay=cfg.weight_decay)


def build_scheduler(
    opt: torch.optim.Optimizer, cfg: TrainConfig
) -> torch.optim.lr_scheduler.LRScheduler:
    s = cfg.scheduler

    def factor(it: int) -> float:
        warm = min(1.0, (it + 1) / s.warmup) if s.warmup else 1.0
        if s.name == "multistep":
            return warm * s.gamma ** sum(it >= m for m in s.milestones)
        if s.name == "cosine":
            return warm * 0.5 * (1.0 + math.cos(math.pi * min(it, cfg.iterations) / cfg.iterations))
        if s.name == "exponential":
            return warm * s.gamma ** (it / cfg.iterations)
        return warm

    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


def _improved(value: float, best: float, mode: str, delta: float) -> bool:
    if math.isnan(best):
        return True
    return value < best - delta if mode == "min" else value > best + delta


def _prepare_finetune(model: nn.Module, config: RunConfig) -> None:
    """Load ``train.finetune_from`` and freeze all but the last update layer (and head)."""
    cfg = config.train
    if cfg.finetune_from is None:
        return
    source = load(cfg.finetune_from)
    try:
        model.load_state_dict(source.state_dict())
    except RuntimeError as err:
        raise ConfigError(
            f"key 'train.finetune_from': {cfg.finetune_from} does not fit this model config: {err}"
        ) from None
    if cfg.trainable == "last":
        for name, p in model.named_parameters():
            owner = name.rsplit(".", 2)[-2] if "." in name else ""  # learned filters: none
            p.requires_grad_(owner == "fc2" or name.startswith("head."))  # an MLP head whole


def resolve_impl(impl: Impl, config: RunConfig, device: torch.device) -> Backend:
    """The backend a run uses (:meth:`~ncaflow.backends.base.Backend.on`): 'auto' becomes
    'fused' on a CUDA device with Triton where the model's MLP fits the kernels."""
    return get_backend(impl).on(device, mlp_sizes(config.model))


def train(
    config: RunConfig,
    out_dir: str | Path,
    *,
    task: Task | None = None,
    on_iteration: Callable[[int], None] | None = None,
    impl: Impl = "auto",
    overwrite: bool = False,
) -> TrainResult:
    """Train ``config`` into ``out_dir``, resuming from its checkpoint if there is one.

    on_iteration(it) is called after every finished iteration (tests use it to
    simulate a crash). impl picks the NCA implementation (same results, see NCA).
    Ctrl-C or SIGTERM raise :class:`TrainingInterrupted`; the last checkpoint stays.
    A finished model of another config in ``out_dir`` is replaced only if ``overwrite``.
    """
    out = Path(out_dir)
    device = select_device(config.train.device)
    problem = get_backend(impl).unavailable(device)
    if problem is not None:  # before anything is written
        raise ConfigError(
            f"impl {impl!r} (--impl {impl}) {problem}, and this run trains "
            f"on {device.type} (train.device={config.train.device}); use impl 'auto'"
        )
    if (
        config.train.reproducible
        and device.type == "cpu"
        and not resolve_impl(impl, config, device).pinned_cpu_kernels
    ):
        raise ConfigError(
            f"key 'train.reproducible': true, but impl {impl!r} (--impl {impl}) compiles its "
            "own CPU code, which the reproducible mode cannot pin; use impl 'auto' or set "
            "train.reproducible=false",
            "train.reproducible",
        )
    reproducible.require(reproducible=config.train.reproducible, device_type=device.type)
    check_memory(config, device)  # before anything is written or allocated
    created = not out.exists()  # then a run that fails before training removes it again
    with ExitStack() as stack:
        try:
            out.mkdir(parents=True, exist_ok=True)
            stack.enter_context(folder_lock(out))
        except OSError as err:
            raise cannot_write(out, err) from None
        no_symlink(out / "tensorboard")  # event files go inside the folder, nowhere else
        if not overwrite:
            _refuse_replacing(out, config)
        stack.enter_context(_sigterm_as_interrupt())
        progress: Progress | None = None
        try:
            run = _setup(config, out, device, impl, task)
            progress = resume(run)
            _loop(run, progress, on_iteration)
            return _finish(run, progress)
        except KeyboardInterrupt:
            done = progress.iteration if progress else 0
            if not (out / CHECKPOINT).exists():
                raise TrainingInterrupted(
                    f"interrupted at iteration {done}, before the first checkpoint: nothing "
                    f"was saved in {out}; run the same command again to start over"
                ) from None
            raise TrainingInterrupted(
                f"interrupted at iteration {done}; run the same command again to resume from {out}"
            ) from None
        finally:
            if created and progress is None:  # still locked: only this call wrote here
                shutil.rmtree(out, ignore_errors=True)
    raise AssertionError("unreachable")  # mypy: ExitStack may swallow exceptions


def _refuse_replacing(out: Path, config: RunConfig) -> None:
    """A finished model (model.json, no checkpoint) of another config in ``out`` stays."""
    meta = out / "model.json"
    if not meta.is_file() or (out / CHECKPOINT).exists():
        return
    try:
        stored = json.loads(meta.read_text(encoding="utf-8"))["config"]
        changes = changed_keys(stored, to_dict(config), ignore=RESUME_SAFE_KEYS)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        changes = ["its model.json cannot be read"]
    if changes:
        shown = "; ".join(clip(c, 80) for c in changes[:3])
        more = f" and {len(changes) - 3} more" if len(changes) > 3 else ""
        raise ConfigError(
            f"{meta}: this folder holds a finished model of another config ({shown}{more}); "
            "pass --overwrite to replace it, or use another --out"
        )


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM (kill, SLURM, Snakemake) stops training like Ctrl-C: as a KeyboardInterrupt,
    between two Python operations, so no write is left half done."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be set in the main thread
        return

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _setup(
    config: RunConfig, out: Path, device: torch.device, impl: Impl, task: Task | None
) -> Run:
    """Seed everything, then build model, task, optimiser and scheduler as a fresh run."""
    cfg = config.train
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    random.seed(cfg.seed)
    model = build_model(config, resolve_impl(impl, config, device).name).to(device)
    _prepare_finetune(model, config)
    task = task or get_task(config.task)(config=config, device=device)
    task.setup()
    params = [p for p in model.parameters() if p.requires_grad]
    use_graphs = cfg.cuda_graphs and graphs_supported(device) and cfg.optimizer != "sgd"
    opt = build_optimizer(params, cfg, capturable=use_graphs)
    return Run(
        config=config,
        out=out,
        device=device,
        model=model,
        task=task,
        params=params,
        opt=opt,
        sched=build_scheduler(opt, cfg),
        data_gen=torch.Generator().manual_seed(cfg.seed),
        mask_gen=torch.Generator(device=device).manual_seed(cfg.seed + 1),
        use_graphs=use_graphs,
    )


def _graphed_iteration(run: Run) -> GraphedIteration:
    """One training iteration, replayed as CUDA graphs where ``run.use_graphs``."""
    cfg, model, task, opt, params = run.config.train, run.model, run.task, run.opt, run.params
    chunk = ROLLOUT_CHUNK if cfg.gradient_checkpointing else 0

    def iteration(
        steps: int, state: Tensor, target: Tensor, mask: Tensor | None
    ) -> tuple[Tensor, Tensor]:
        """Rollout, loss, backward, optimiser step: (per-sample losses, final state)."""
        final = model(state, steps, generator=run.mask_gen, checkpoint_every=chunk)
        batch = Batch(state=state, target=target, mask=mask)
        losses = objective(task, model, final, batch, run.config)  # (B,)
        opt.zero_grad(set_to_none=True)
        losses.mean().backward()
        if cfg.grad_norm:
            for p in params:
                if p.grad is not None:
                    p.grad /= p.grad.norm() + 1e-8
        if cfg.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        opt.step()
        return losses.detach(), final.detach()

    return GraphedIteration(
        iteration, params=params, optimizer=opt, generator=run.mask_gen, enabled=run.use_graphs
    )


def _loop(run: Run, progress: Progress, on_iteration: Callable[[int], None] | None) -> None:
    """Train from ``progress.iteration`` to the end (or an early stop), checkpointing."""
    cfg, task = run.config.train, run.task
    start = progress.iteration
    board = Board(run.out / "tensorboard", start or None, cannot_write)
    graphed = _graphed_iteration(run)
    readback = LossReadback(device=run.device)  # on CUDA each loss is read one iteration late
    lo, hi = cfg.steps[0], cfg.steps[-1]
    end = start if progress.stopped_early else cfg.iterations
    bar = tqdm(
        range(start, end),
        initial=start,
        total=cfg.iterations,
        disable=not cfg.progress,
        desc=run.config.name or run.config.task,
        leave=False,
    )
    progress.lap_start = time.perf_counter()
    with board, closing(bar):
        for it in bar:
            run.model.train()
            batch = task.sample(run.data_gen)
            steps = int(torch.randint(lo, hi + 1, (1,), generator=run.data_gen)) if hi > lo else lo
            losses, final = graphed(steps, batch.state, batch.target, batch.mask)
            run.sched.step()
            task.after_step(batch, final, losses)
            n = progress.iteration = it + 1
            readback.push(n, losses, current_lr(run.opt, run.sched, cfg.lr))
            evaluate = n % cfg.eval_every == 0 or n == cfg.iterations
            save = n % cfg.checkpoint_every == 0 or n == cfg.iterations
            for m, loss, lr in readback.ready(flush=evaluate or save):
                if not math.isfinite(loss):  # the weights are not saved: the last checkpoint
                    raise TrainingError(  # stays, and resumes only with its own config:
                        f"loss became {loss} at iteration {m}; lower train.lr, or set "
                        "train.grad_clip / train.grad_norm, and start over (delete "
                        f"{run.out / CHECKPOINT}, or use another --out)"
                    )
                board.scalar("train/loss", loss, m)
                board.scalar("train/lr", lr, m)
                bar.set_postfix(loss=f"{loss:.4g}")
            if n % cfg.log_images_every == 0:
                board.images("train/final_state", task.preview(final[:8]).cpu(), n)
            if evaluate:
                _evaluate_and_track(run, progress, board, loss=loss, lr=lr)
            if save or progress.stopped_early:
                _save_checkpoint(run, progress)
            if on_iteration is not None:
                on_iteration(n)
            if progress.stopped_early:
                break


def _evaluate_and_track(
    run: Run, progress: Progress, board: Board, *, loss: float, lr: float
) -> None:
    """Evaluate on the validation split; append a history row; track the best weights
    and early stopping."""
    config, n = run.config, progress.iteration
    stop = config.train.early_stopping
    run.model.eval()
    with torch.no_grad():
        gen = torch.Generator(device=run.device).manual_seed(config.train.seed + 2)
        metrics = run.task.evaluate(run.model, "val", gen)
    if stop.metric not in metrics:
        raise ConfigError(
            f"key 'train.early_stopping.metric': {stop.metric!r} is not reported by task "
            f"{config.task!r}; choose one of {sorted(metrics)}"
        )
    history = progress.history
    row = {"iteration": float(n), "loss": loss, "lr": lr, **metrics}
    lap = time.perf_counter() - progress.lap_start
    row["seconds"] = lap + (history[-1]["seconds"] if history else 0.0)
    progress.lap_start = time.perf_counter()
    history.append(row)
    for k, v in metrics.items():
        board.scalar(k.replace("_", "/", 1), v, n)
    if _improved(metrics[stop.metric], progress.best, stop.mode, stop.min_delta):
        progress.best, progress.best_iteration, progress.bad_evals = metrics[stop.metric], n, 0
        progress.best_state = clone(run.model.state_dict())
    else:
        progress.bad_evals += 1
    progress.stopped_early = stop.patience > 0 and progress.bad_evals >= stop.patience


def _save_checkpoint(run: Run, progress: Progress) -> None:
    """Write the resumable state atomically: a failed write keeps the previous one."""
    path = run.out / CHECKPOINT
    try:
        write_checkpoint(path, checkpoint_state(run, progress))
    except OSError as err:
        raise cannot_write(path, err) from None


def _finish(run: Run, progress: Progress) -> TrainResult:
    """Write last.*, history.csv and (last) model.*, then drop the checkpoint. A failure
    or interrupt on the way removes model.*: only a finished run has them."""
    env = reproducible.environment(
        reproducible=run.config.train.reproducible, device_type=run.device.type
    )
    out, meta = run.out, {**run.task.meta(), "environment": env}
    target = out / "last.safetensors"
    try:
        save(run.model, run.config, target, meta=meta)
        run.model.load_state_dict(progress.best_state)
        target = out / "history.csv"
        _write_history(target, progress.history)
        target = out / "model.safetensors"
        save(run.model, run.config, target, meta=meta)
    except BaseException as err:
        for path in model_paths(out / "model.safetensors"):
            path.unlink(missing_ok=True)
        if isinstance(err, OSError):
            raise cannot_write(target, err) from None
        raise
    (out / CHECKPOINT).unlink(missing_ok=True)
    history = progress.history
    return TrainResult(
        out_dir=out,
        iterations=progress.iteration,
        best_metric=progress.best,
        best_iteration=progress.best_iteration,
        stopped_early=progress.stopped_early,
        history=history,
        seconds=history[-1]["seconds"] if history else 0.0,
    )


def cannot_write(path: Path, err: OSError) -> TrainingError:
    """The one-line error for a failed write: disk full, read-only, or else."""
    if err.errno == errno.ENOSPC:
        return TrainingError(
            f"disk full while writing {path}; free some space and run the same command again "
            "to resume, or use another --out"
        )
    if isinstance(err, PermissionError) or err.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return TrainingError(f"cannot write {path} (read-only or not permitted); use another --out")
    return TrainingError(f"cannot write {path} ({err.strerror or err}); use another --out")


def _write_history(path: Path, history: list[dict[str, float]]) -> None:
    import pandas as pd

    atomic_write(path, lambda tmp: pd.DataFrame(history).to_csv(tmp, index=False))
