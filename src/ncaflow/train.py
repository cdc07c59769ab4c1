"""One training engine for every task.

``train(config, out_dir)`` runs the loop and leaves in ``out_dir``::

    model.safetensors, model.json   best weights by the validation metric (written last)
    last.safetensors, last.json     weights after the final iteration
    history.csv                     one row per evaluation
    tensorboard/                    scalars and image previews
    checkpoint.pt                   resumable state while running; removed on success

On a CUDA device each iteration (rollout, loss, backward, optimiser step) is
replayed as a CUDA graph, see :mod:`ncaflow.backends.graphs` (``train.cuda_graphs``).

A run killed at any point and started again with the same arguments resumes
from ``checkpoint.pt`` (model, optimiser, scheduler, RNG states, sample pool,
history) and, on CPU, ends bit-identical to an uninterrupted run.
"""

from __future__ import annotations

import functools
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from tqdm import tqdm

from ncaflow.backends import fused
from ncaflow.backends.graphs import GraphedIteration, graphs_supported
from ncaflow.cascade import build_model
from ncaflow.config import ConfigError, RunConfig, TrainConfig
from ncaflow.io import atomic_write, load, save
from ncaflow.nca import Impl, mlp_sizes
from ncaflow.tasks import Batch, Task, get_task

__all__ = [
    "TrainResult",
    "TrainingError",
    "build_optimizer",
    "build_scheduler",
    "select_device",
    "train",
]

CHECKPOINT = "checkpoint.pt"
ROLLOUT_CHUNK = 8  # train.gradient_checkpointing: steps recomputed together in backward


class TrainingError(RuntimeError):
    """Training cannot go on (for example the loss became NaN)."""


@dataclass(kw_only=True)
class TrainResult:
    out_dir: Path
    iterations: int
    best_metric: float
    best_iteration: int
    stopped_early: bool
    history: list[dict[str, float]]
    seconds: float


def select_device(name: str = "auto") -> torch.device:
    """``auto`` picks cuda, then mps, then cpu."""
    if name != "auto":
        return torch.device(name)
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


def _rng_state(data_gen: torch.Generator, mask_gen: torch.Generator) -> dict[str, Any]:
    return {
        "data": data_gen.get_state(),
        "mask": mask_gen.get_state(),
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(),
        "python": random.getstate(),
    }


def _set_rng_state(
    state: dict[str, Any], data_gen: torch.Generator, mask_gen: torch.Generator
) -> None:
    # generator states are CPU byte tensors, whatever device the checkpoint was mapped to
    data_gen.set_state(state["data"].cpu())
    mask_gen.set_state(state["mask"].cpu())
    torch.set_rng_state(state["torch"].cpu())
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])


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
            p.requires_grad_(name.split(".")[-2] in ("fc2", "head"))


def resolve_impl(impl: Impl, config: RunConfig, device: torch.device) -> Impl:
    """The implementation a run uses: 'auto' becomes 'fused' on a CUDA device with Triton
    where the model's MLP fits the kernels (on an H200 with CUDA graphs: 7x the eager
    baseline's training speed at batch 8, 2.7x at batch 256; the README's Performance
    section); otherwise the NCA decides per grid."""
    if impl != "auto" or device.type != "cuda" or not fused.available(device):
        return impl
    return "fused" if fused.supports(*mlp_sizes(config.model)) else impl


def train(
    config: RunConfig,
    out_dir: str | Path,
    *,
    task: Task | None = None,
    on_iteration: Callable[[int], None] | None = None,
    impl: Impl = "auto",
) -> TrainResult:
    """Train ``config`` into ``out_dir``, resuming from its checkpoint if there is one.

    on_iteration(it) is called after every finished iteration (tests use it to
    simulate a crash). impl picks the NCA implementation (same results, see NCA).
    """
    cfg = config.train
    out = Path(out_dir)
    device = select_device(cfg.device)
    if impl == "fused" and not fused.available(device):  # before anything is written
        raise ConfigError(
            f"impl 'fused' (--impl fused) needs triton and a CUDA device, and this run trains "
            f"on {device.type} (train.device={cfg.device}); use impl 'auto'"
        )
    out.mkdir(parents=True, exist_ok=True)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)

    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    random.seed(cfg.seed)
    model = build_model(config, resolve_impl(impl, config, device)).to(device)
    _prepare_finetune(model, config)
    task = task or get_task(config.task)(config=config, device=device)
    task.setup()
    params = [p for p in model.parameters() if p.requires_grad]
    use_graphs = cfg.cuda_graphs and graphs_supported(device) and cfg.optimizer != "sgd"
    opt = build_optimizer(params, cfg, capturable=use_graphs)
    sched = build_scheduler(opt, cfg)
    data_gen = torch.Generator().manual_seed(cfg.seed)
    mask_gen = torch.Generator(device=device).manual_seed(cfg.seed + 1)
    stop = cfg.early_stopping
    metric, mode = stop.metric, stop.mode

    start, best, best_it, bad_evals = 0, float("nan"), -1, 0
    best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    history: list[dict[str, float]] = []
    ckpt_path = out / CHECKPOINT
    if ckpt_path.exists():
        ckpt = torch.load(ckpt_path, map_location=device, weights_only=False)
        if ckpt.get("device", device.type) != device.type:
            raise ConfigError(
                f"{ckpt_path} was written while training on {ckpt['device']}, and its random "
                f"number generators cannot continue on {device.type}: resume with "
                f"train.device={ckpt['device']}, or delete it to start over"
            )
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        sched.load_state_dict(ckpt["scheduler"])
        task.load_state_dict(ckpt["task"])
        _set_rng_state(ckpt["rng"], data_gen, mask_gen)
        start, best, best_it, bad_evals = (
            ckpt["iteration"],
            ckpt["best"],
            ckpt["best_iteration"],
            ckpt["bad_evals"],
        )
        best_state, history = ckpt["best_state"], ckpt["history"]

    from torch.utils.tensorboard import SummaryWriter  # slow import: only when training

    writer = SummaryWriter(log_dir=str(out / "tensorboard"), purge_step=start or None)
    chunk = ROLLOUT_CHUNK if cfg.gradient_checkpointing else 0

    def iteration(
        steps: int, state: Tensor, target: Tensor, mask: Tensor | None
    ) -> tuple[Tensor, Tensor]:
        """Rollout, loss, backward, optimiser step: (per-sample losses, final state)."""
        final = model(state, steps, generator=mask_gen, checkpoint_every=chunk)
        losses = task.loss(model, final, Batch(state=state, target=target, mask=mask))  # (B,)
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

    graphed = GraphedIteration(
        iteration, params=params, optimizer=opt, generator=mask_gen, enabled=use_graphs
    )
    lo, hi = cfg.steps[0], cfg.steps[-1]
    t0 = time.perf_counter()
    stopped_early = False
    bar = tqdm(
        range(start, cfg.iterations),
        initial=start,
        total=cfg.iterations,
        disable=not cfg.progress,
        desc=config.name or config.task,
        leave=False,
    )
    it = start
    for it in bar:
        model.train()
        batch = task.sample(data_gen)
        steps = int(torch.randint(lo, hi + 1, (1,), generator=data_gen)) if hi > lo else lo
        losses, final = graphed(steps, batch.state, batch.target, batch.mask)
        loss = losses.mean().item()
        if not math.isfinite(loss):  # the weights are not saved: the last checkpoint stays
            raise TrainingError(
                f"loss became {loss} at iteration {it + 1}; "
                "lower train.lr, or set train.grad_clip / train.grad_norm"
            )
        sched.step()
        task.after_step(batch, final, losses)
        n = it + 1
        lr = float(opt.param_groups[0]["lr"])
        writer.add_scalar("train/loss", loss, n)
        writer.add_scalar("train/lr", lr, n)
        bar.set_postfix(loss=f"{loss:.4g}")
        if n % cfg.log_images_every == 0:
            writer.add_images("train/final_state", task.preview(final[:8]).cpu(), n)

        if n % cfg.eval_every == 0 or n == cfg.iterations:
            model.eval()
            with torch.no_grad():
                metrics = task.evaluate(
                    model, "val", torch.Generator(device=device).manual_seed(cfg.seed + 2)
                )
            if metric not in metrics:
                raise ConfigError(
                    f"key 'train.early_stopping.metric': {metric!r} is not reported by task "
                    f"{config.task!r}; choose one of {sorted(metrics)}"
                )
            row = {
                "iteration": float(n),
                "loss": loss,
                "lr": lr,
                **metrics,
            }
            row["seconds"] = time.perf_counter() - t0 + (history[-1]["seconds"] if history else 0.0)
            t0 = time.perf_counter()
            history.append(row)
            for k, v in metrics.items():
                writer.add_scalar(k.replace("_", "/", 1), v, n)
            if _improved(metrics[metric], best, mode, stop.min_delta):
                best, best_it, bad_evals = metrics[metric], n, 0
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            else:
                bad_evals += 1
            stopped_early = stop.patience > 0 and bad_evals >= stop.patience

        if n % cfg.checkpoint_every == 0 or stopped_early or n == cfg.iterations:
            state = {
                "model": model.state_dict(),
                "optimizer": opt.state_dict(),
                "scheduler": sched.state_dict(),
                "task": task.state_dict(),
                "rng": _rng_state(data_gen, mask_gen),
                "iteration": n,
                "best": best,
                "best_iteration": best_it,
                "bad_evals": bad_evals,
                "best_state": best_state,
                "history": history,
                "device": device.type,
            }
            atomic_write(ckpt_path, functools.partial(torch.save, state))
        if on_iteration is not None:
            on_iteration(n)
        if stopped_early:
            break
    bar.close()
    writer.flush()
    writer.close()

    final_it = it + 1 if cfg.iterations > start else start
    save(model, config, out / "last.safetensors", meta=task.meta())
    model.load_state_dict(best_state)
    _write_history(out / "history.csv", history)
    save(model, config, out / "model.safetensors", meta=task.meta())
    ckpt_path.unlink(missing_ok=True)
    return TrainResult(
        out_dir=out,
        iterations=final_it,
        best_metric=best,
        best_iteration=best_it,
        stopped_early=stopped_early,
        history=history,
        seconds=history[-1]["seconds"] if history else 0.0,
    )


def _write_history(path: Path, history: list[dict[str, float]]) -> None:
    import pandas as pd

    atomic_write(path, lambda tmp: pd.DataFrame(history).to_csv(tmp, index=False))
