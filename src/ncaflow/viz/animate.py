"""Animated GIFs of a rollout: the task's view and a hidden-channel view, each titled, a step
counter and the task's colour key.

Only Pillow is used (its built-in bitmap font), so nothing outside the
installed packages is needed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont
from torch import Tensor, nn

from ncaflow.guard.io import atomic_write
from ncaflow.guard.limits import check_bytes
from ncaflow.tasks.base import Task

__all__ = ["animate", "hidden_view", "render_frame"]


def hidden_view(state: Tensor, first_hidden: int) -> Tensor:
    """(C, H, W) state -> (3, H, W): the first three hidden channels squashed into [0, 1]."""
    hidden = state[first_hidden : first_hidden + 3]
    if hidden.shape[0] < 3:
        hidden = torch.cat([hidden, hidden.new_zeros(3 - hidden.shape[0], *hidden.shape[1:])])
    return 0.5 + 0.5 * torch.tanh(hidden)


def _to_image(rgb: Tensor, scale: int) -> Image.Image:
    array = (rgb.clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255).round().astype(np.uint8)
    image = Image.fromarray(array, "RGB")
    return image.resize((image.width * scale, image.height * scale), Image.Resampling.NEAREST)


def render_frame(
    panels: list[Tensor],
    caption: str,
    scale: int,
    *,
    titles: list[str] | None = None,
    key: list[tuple[str, tuple[float, float, float]]] | None = None,
) -> Image.Image:
    """Panels of (3, H, W) in [0, 1] side by side, each under its title, with a caption bar
    and a colour key (label, RGB in [0, 1]) below."""
    images = [_to_image(p, scale) for p in panels]
    font = ImageFont.load_default()
    gap, line = 4, 14
    width = sum(i.width for i in images) + gap * (len(images) - 1)
    top = line if titles else 0
    draw_probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    rows: list[list[tuple[str, tuple[float, float, float]]]] = []
    x = 0
    for label, colour in key or []:  # wrap the key's entries into rows of the frame's width
        w = 12 + int(draw_probe.textlength(label, font=font)) + 8
        if not rows or x + w > width:
            rows.append([])
            x = 0
        rows[-1].append((label, colour))
        x += w
    frame = Image.new("RGB", (width, top + images[0].height + line * (1 + len(rows))), "white")
    draw = ImageDraw.Draw(frame)
    x = 0
    for i, image in enumerate(images):
        frame.paste(image, (x, top))
        if titles:
            draw.text((x + 1, 1), titles[i], fill="black", font=font)
        x += image.width + gap
    y = top + images[0].height + 2
    draw.text((2, y), caption, fill="black", font=font)
    for row in rows:
        y += line
        x = 2
        for label, colour in row:
            rgb = tuple(round(255 * v) for v in colour)
            draw.rectangle((x, y + 2, x + 8, y + 10), fill=rgb, outline="black")
            draw.text((x + 12, y), label, fill="black", font=font)
            x += 12 + int(draw.textlength(label, font=font)) + 8
    return frame


@torch.no_grad()
def animate(
    model: nn.Module,
    task: Task,
    out: str | Path,
    *,
    steps: int,
    split: str = "test",
    index: int = 0,
    every: int = 1,
    scale: int = 4,
    fps: int = 20,
    seed: int = 0,
) -> int:
    """Write a GIF of one rollout; returns the number of frames (1 + steps // every)."""
    examples = task.examples(split, index + 1)
    if not 0 <= index < len(examples):
        raise ValueError(
            f"--index {index}: the {split} split has {len(examples)} examples; "
            f"give 0..{len(examples) - 1}"
        )
    state = examples[index : index + 1]  # (1, C, H, W)
    h, w = state.shape[-2:]
    frame_bytes = 3 * (2 * w * scale + 4) * (h * scale + 14)  # two panels and a caption
    check_bytes(
        (1 + steps // every) * frame_bytes,
        key="--steps",
        what=f"{1 + steps // every} frames of {h}x{w} cells at --scale {scale}",
        fix="give fewer --steps, a larger --every or a smaller --scale",
    )
    first_hidden = task.config.model.input_channels + task.config.model.output_channels
    frames: list[Image.Image] = []
    titles = [task.preview_title, "hidden 1-3"]
    key = task.preview_key()

    def add(t: int, x: Tensor) -> None:
        if t % every == 0:
            panels = [task.preview(x)[0], hidden_view(x[0], first_hidden)]
            frames.append(render_frame(panels, f"step {t}/{steps}", scale, titles=titles, key=key))

    add(0, state)
    model(state, steps, generator=torch.Generator().manual_seed(seed), callback=add)

    def write(tmp: Path) -> None:
        frames[0].save(
            tmp,
            format="GIF",
            save_all=True,
            append_images=frames[1:],
            duration=max(1, 1000 // fps),
            loop=0,
        )

    atomic_write(out, write)
    return len(frames)
