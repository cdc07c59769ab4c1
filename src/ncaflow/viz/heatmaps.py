"""Figures of predictions with their uncertainty (mean and variance over stochastic rollouts)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ncaflow.guard.io import atomic_write
from ncaflow.model.uncertainty import step_window, stochastic_rollouts
from ncaflow.tasks.base import Task

__all__ = ["uncertainty_figure"]


@torch.no_grad()
def uncertainty_figure(
    model: nn.Module,
    task: Task,
    out: str | Path,
    *,
    steps: int,
    n_rollouts: int = 16,
    n_examples: int = 4,
    split: str = "test",
    seed: int = 0,
    window: int = 0,
) -> None:
    """Rows: examples; columns: the task's view of one rollout, the mean prediction (the
    probability for one- or two-channel maps, else the largest channel), the variance
    summed over channels, with ``window`` >= 2 the variance over the last ``window`` steps
    of one rollout (:func:`~ncaflow.model.uncertainty.step_window`), and the target where
    the task has one.
    Written as PNG or PDF by the suffix of ``out``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    seeds = task.examples(split, n_examples)
    gen = torch.Generator(device=seeds.device).manual_seed(seed)
    mean, var = stochastic_rollouts(
        model, seeds, steps, n=n_rollouts, generator=gen, readout=task.pixel_map
    )
    view = task.preview(model(seeds, steps, generator=gen))
    window_var = None
    if window >= 2:
        _, window_var = step_window(
            model, seeds, steps, window=window, generator=gen, readout=task.pixel_map
        )
    targets = task.splits[split][1] if split in task.splits else None
    spatial_target = targets is not None and targets.ndim == 4
    cols = 3 + int(spatial_target) + int(window_var is not None)
    fig, axes = plt.subplots(
        len(seeds), cols, figsize=(2.2 * cols, 2.2 * len(seeds)), squeeze=False
    )
    k = mean.shape[1]
    shown_mean = mean[:, k - 1] if k <= 2 else mean.amax(1)  # (B, H, W)
    mean_title = "mean probability" if k <= 2 else "largest mean probability"
    for i in range(len(seeds)):
        panels = [
            (view[i].permute(1, 2, 0).cpu().numpy(), "one rollout", None, None),
            (shown_mean[i].cpu().numpy(), mean_title, "viridis", "probability"),
            (var[i].sum(0).cpu().numpy(), "variance over rollouts", "magma", "variance"),
        ]
        if window_var is not None:
            title = f"variance, last {window} steps"
            panels.append((window_var[i].sum(0).cpu().numpy(), title, "magma", "variance"))
        if spatial_target and targets is not None:
            panels.append((targets[i, 0].cpu().numpy(), "target", "gray", None))
        for ax, (image, title, cmap, bar) in zip(axes[i], panels, strict=True):
            limits: dict[str, float] = {}
            if bar == "probability":
                limits = {"vmin": 0.0, "vmax": 1.0}
            elif bar == "variance":  # never negative; a constant map gets a 0-based bar
                limits = {"vmin": 0.0, "vmax": max(float(image.max()), 1e-6)}
            shown = ax.imshow(image, cmap=cmap, **limits)
            if bar is not None:
                fig.colorbar(shown, ax=ax, fraction=0.046, label=bar)
            ax.set_title(title if i == 0 else "", fontsize=9)
            ax.axis("off")
    title = f"{task.name}: {n_rollouts} stochastic rollouts of {steps} steps"
    if window_var is not None:
        title += f"; the last {window} steps of one rollout"
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    suffix = Path(out).suffix.lstrip(".") or "png"
    # no timestamps or version strings: the same rollouts give the same bytes
    metadata = {"png": {"Software": None}, "pdf": {"CreationDate": None, "Creator": None}}.get(
        suffix
    )

    def write(tmp: Path) -> None:
        fig.savefig(tmp, format=suffix, dpi=120, metadata=metadata)

    atomic_write(out, write)
    plt.close(fig)
