"""Growing NCA (Mordvintsev et al., Distill 2020): grow an RGBA emoji from one seed cell.

Training uses the Distill sample pool: a batch is drawn from the pool, the
worst sample is replaced by a fresh seed, the best ``damage`` samples get a
circular hole, and the rolled-out states are written back.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from ncaflow.config import MAX_SIDE, MAX_STEPS, ModelConfig, Range, check, ranged
from ncaflow.data import load_emoji
from ncaflow.tasks.augment import circle_damage
from ncaflow.tasks.base import Batch, CommonData, Task
from ncaflow.tasks.transfer import upload

__all__ = ["Growing", "GrowingData"]


@dataclass(frozen=True, kw_only=True)
class GrowingData(CommonData):
    target: str = "1f98e"  # emoji code, PNG path or URL
    size: int = ranged(40, Range(1, MAX_SIDE))
    pad: int = ranged(16, Range(0, MAX_SIDE))
    pool_size: int = ranged(1024, Range(1, 1_000_000))
    # best samples per batch that get a hole; 0 = no regeneration training
    damage: int = ranged(3, Range(0, 100_000))
    eval_batch: int = ranged(4, Range(1, 65536))
    persistence_steps: int = ranged(1000, Range(0, MAX_STEPS))


class Growing(Task):
    name = "growing"
    Data = GrowingData
    select_metric = "val_loss"
    readout = "rgba"
    figures = ("growth",)
    preview_title = "RGBA over white"
    headline = (
        ("test_mse", "MSE"),
        ("test_persistence_mse", "MSE after 1000 steps"),
        ("test_damaged_mse", "MSE damaged"),
        ("test_regrowth_mse", "MSE regrown"),
    )
    predict_instead = (
        "it grows its pattern from one seed cell and reads no image; "
        "use `ncaflow animate` to watch it"
    )
    data: GrowingData

    @classmethod
    def export_check(cls, model: ModelConfig) -> None:
        ok = model.input_channels == 0 and model.output_channels >= 4
        check(ok, "model", "growing needs input_channels 0 and output_channels >= 4")

    @classmethod
    def grid_size(cls, data: dict[str, Any], meta: dict[str, Any]) -> tuple[int, int]:
        if "target_shape" in meta:
            _, h, w = meta["target_shape"]
            return int(h), int(w)
        defaults = GrowingData()
        side = int(data.get("size", defaults.size)) + 2 * int(data.get("pad", defaults.pad))
        return side, side

    def check_model(self) -> None:
        m = self.config.model
        self.require(m.input_channels == 0, "model.input_channels", "must be 0 for growing")
        self.require(m.output_channels >= 4, "model.output_channels", "must be >= 4 (RGBA)")
        self.require(
            self.data.pool_size >= self.config.train.batch_size,
            "data.pool_size",
            "must be >= train.batch_size",
        )

    def setup(self) -> None:
        target = load_emoji(
            self.data.target,
            size=self.data.size,
            pad=self.data.pad,
            root=self.data.root,
            mirror=self.data.mirror,
        )
        self.target = target.to(self.device)  # (4, H, W) premultiplied RGBA
        self.pool = self.seed(self.data.pool_size)

    def seed(self, n: int) -> Tensor:
        """(n, C, H, W): one live cell in the centre, alpha and hidden channels set to 1."""
        _, h, w = self.target.shape
        x = torch.zeros(n, self.config.model.channels, h, w, device=self.device)
        x[:, 3:, h // 2, w // 2] = 1.0
        return x

    def mse(self, x: Tensor) -> Tensor:
        """(B, C, H, W) -> (B,) mean squared error of the RGBA channels."""
        return ((x[:, :4] - self.target) ** 2).mean(dim=(1, 2, 3))

    def sample(self, generator: torch.Generator) -> Batch:
        b = self.config.train.batch_size
        idx = upload(torch.randperm(self.data.pool_size, generator=generator)[:b], self.device)
        x = self.pool[idx].clone()
        order = self.mse(x).argsort(descending=True)  # worst first, on the device: no wait
        x[order[:1]] = self.seed(1)
        if self.data.damage:
            best = order[-self.data.damage :]
            hole = circle_damage(len(best), x.shape[2], x.shape[3], generator)
            x[best] *= upload(hole, self.device)
        return Batch(state=x, target=self.target, index=idx)

    def loss(self, model: nn.Module, out: Tensor, batch: Batch) -> Tensor:
        return self.mse(out)

    def after_step(self, batch: Batch, out: Tensor, losses: Tensor) -> None:
        assert batch.index is not None
        self.pool[batch.index] = out

    @torch.no_grad()
    def evaluate(
        self, model: nn.Module, split: str, generator: torch.Generator
    ) -> dict[str, float]:
        steps = self.eval_steps
        grown = model(self.seed(self.data.eval_batch), steps, generator=generator)
        metrics = {f"{split}_loss": self.mse(grown).mean().item()}
        if split == "test":
            metrics["test_mse"] = metrics["test_loss"]
            later = model(grown, self.data.persistence_steps - steps, generator=generator)
            metrics["test_persistence_mse"] = self.mse(later).mean().item()
            cpu_gen = torch.Generator().manual_seed(0)
            hole = circle_damage(len(grown), grown.shape[2], grown.shape[3], cpu_gen).to(
                self.device
            )
            regrown = model(grown * hole, steps, generator=generator)
            metrics["test_damaged_mse"] = self.mse(grown * hole).mean().item()
            metrics["test_regrowth_mse"] = self.mse(regrown).mean().item()
        return metrics

    def data_checksum(self) -> str:
        from ncaflow.data import array_checksum

        return array_checksum(self.target.cpu().numpy())

    def examples(self, split: str, n: int) -> Tensor:
        return self.seed(n)

    def pixel_map(self, out: Tensor) -> Tensor:
        return out[:, :4]  # (B, 4, H, W) premultiplied RGBA

    def preview(self, out: Tensor) -> Tensor:
        rgb, a = out[:, :3], out[:, 3:4].clamp(0, 1)
        return (1.0 - a + rgb).clamp(0, 1)  # premultiplied RGBA over white

    def meta(self) -> dict[str, Any]:
        return {"target_shape": list(self.target.shape), "seed": "centre cell, channels 3: = 1"}

    def state_dict(self) -> dict[str, Any]:
        return {"pool": self.pool}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.pool = state["pool"].to(self.device)
