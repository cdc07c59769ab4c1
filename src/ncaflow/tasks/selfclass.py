"""Self-classifying digits (Randazzo et al., Distill 2020).

Every cell on the digit predicts the digit's class from local communication
alone; the image is a frozen input channel, and the alive mask is the digit
itself (``model.alive_channel = 0``). The digit's class is the majority vote
of its pixels.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ncaflow.config import FRACTION, ModelConfig, Range, check, ranged
from ncaflow.data import load_digits, load_mnist
from ncaflow.tasks.base import PALETTE, Batch, CommonData, Task, batches
from ncaflow.tasks.transfer import upload

__all__ = ["SelfClassification", "SelfClassificationData", "split_indices", "vote"]


@dataclass(frozen=True, kw_only=True)
class SelfClassificationData(CommonData):
    dataset: Literal["mnist", "digits"] = "mnist"
    # "test10k": the 10,000 MNIST test images split into train+val / test by split_seed;
    # "official": the 60,000 training images for train+val, the 10,000 test images for test.
    split: Literal["test10k", "official"] = "test10k"
    test_size: int = ranged(2000, Range(1, 1e8))
    val_size: int = ranged(1000, Range(1, 1e8))
    split_seed: int = ranged(0, Range(0, 2**32 - 1))
    threshold: float = ranged(0.1, FRACTION)  # pixels above this belong to the digit
    loss: Literal["ce", "mse"] = "ce"
    eval_batch: int = ranged(256, Range(1, 65536))


def split_indices(n: int, *, test_size: int, val_size: int, seed: int) -> dict[str, np.ndarray]:
    """A fixed random split of range(n) into train / val / test index arrays."""
    perm = np.random.default_rng(seed).permutation(n)
    test, rest = perm[:test_size], perm[test_size:]
    return {
        "train": np.sort(rest[val_size:]),
        "val": np.sort(rest[:val_size]),
        "test": np.sort(test),
    }


def vote(logits: Tensor, mask: Tensor) -> Tensor:
    """Majority vote of per-pixel argmax: logits (B, K, H, W), mask (B, 1, H, W) -> (B,)."""
    k = logits.shape[1]
    onehot = F.one_hot(logits.argmax(1), k).permute(0, 3, 1, 2) * mask  # (B, K, H, W)
    return onehot.sum(dim=(2, 3)).argmax(1)


class SelfClassification(Task):
    name = "selfclass"
    Data = SelfClassificationData
    select_metric = "val_acc"
    select_mode = "max"
    headline = (("test_acc", "test accuracy (vote)"), ("test_pixel_acc", "pixel accuracy"))
    predict_instead = "it classifies MNIST digits by their own shape; use `ncaflow evaluate`"
    preview_title = "class per cell"
    data: SelfClassificationData

    @classmethod
    def export_check(cls, model: ModelConfig) -> None:
        ok = model.input_channels >= 1
        check(ok, "model.input_channels", "selfclass needs the digit in channel 0")

    @classmethod
    def vote_threshold(cls, meta: dict[str, Any]) -> float:
        return float(meta.get("threshold", 0.1))

    @classmethod
    def grid_size(cls, data: dict[str, Any], meta: dict[str, Any]) -> tuple[int, int]:
        return 28, 28  # MNIST

    def check_model(self) -> None:
        m = self.config.model
        self.require(m.input_channels == 1, "model.input_channels", "must be 1 (the grey digit)")
        self.require(m.output_channels == 10, "model.output_channels", "must be 10 (one per class)")
        self.require(
            m.alive_channel == 0,
            "model.alive_channel",
            "must be 0 so that only the digit's cells live",
        )

    def setup(self) -> None:
        d = self.data
        if d.dataset == "digits":
            images, labels = load_digits()
            parts = split_indices(
                len(labels),
                test_size=len(labels) // 5,
                val_size=len(labels) // 10,
                seed=d.split_seed,
            )
        elif d.split == "official":
            images, labels = load_mnist(split="train", root=self.data.root, mirror=d.mirror)
            test_x, test_y = load_mnist(split="test", root=self.data.root, mirror=d.mirror)
            n = len(labels)
            parts = split_indices(n, test_size=0, val_size=d.val_size, seed=d.split_seed)
            parts["test"] = np.arange(n, n + len(test_y))
            images, labels = np.concatenate([images, test_x]), np.concatenate([labels, test_y])
        else:
            images, labels = load_mnist(split="test", root=self.data.root, mirror=d.mirror)
            parts = split_indices(
                len(labels), test_size=d.test_size, val_size=d.val_size, seed=d.split_seed
            )
        parts = self.apply_folds(parts, labels, images, labels)  # k folds over train+val
        x = torch.from_numpy(images).float().div(255.0).unsqueeze(1)  # (N, 1, H, W)
        y = torch.from_numpy(labels).long()
        self.splits = {k: (x[v].to(self.device), y[v].to(self.device)) for k, v in parts.items()}

    def seed(self, images: Tensor) -> Tensor:
        return self.seed_state(images, self.config.model.channels)

    def digit_mask(self, images: Tensor) -> Tensor:
        return (images > self.data.threshold).float()  # (B, 1, H, W)

    def sample(self, generator: torch.Generator) -> Batch:
        x, y = self.splits["train"]
        idx = upload(
            torch.randint(len(y), (self.config.train.batch_size,), generator=generator), self.device
        )
        images = x[idx]
        return Batch(
            state=self.seed(images), target=y[idx], mask=self.digit_mask(images), index=idx
        )

    def pixel_loss(self, out: Tensor, labels: Tensor, mask: Tensor) -> Tensor:
        """(B, C, H, W) states -> (B,) loss averaged over each digit's pixels."""
        logits = out[:, 1:11]  # (B, 10, H, W)
        if self.data.loss == "ce":
            target = labels.view(-1, 1, 1).expand(-1, *logits.shape[2:])
            per_pixel = F.cross_entropy(logits, target, reduction="none").unsqueeze(1)
        else:
            onehot = F.one_hot(labels, 10).float().view(-1, 10, 1, 1)
            per_pixel = ((logits - onehot) ** 2).mean(1, keepdim=True)
        return (per_pixel * mask).sum(dim=(1, 2, 3)) / mask.sum(dim=(1, 2, 3)).clamp(min=1.0)

    def loss(self, model: nn.Module, out: Tensor, batch: Batch) -> Tensor:
        assert batch.mask is not None
        return self.pixel_loss(out, batch.target, batch.mask)

    @torch.no_grad()
    def evaluate(
        self, model: nn.Module, split: str, generator: torch.Generator
    ) -> dict[str, float]:
        x, y = self.splits[split]
        loss_sum, correct, pix_correct, pix_total = 0.0, 0, 0.0, 0.0
        for s in batches(len(y), self.data.eval_batch):
            mask = self.digit_mask(x[s])
            out = model(self.seed(x[s]), self.eval_steps, generator=generator)
            loss_sum += self.pixel_loss(out, y[s], mask).sum().item()
            correct += int((vote(out[:, 1:11], mask) == y[s]).sum())
            hit = (out[:, 1:11].argmax(1, keepdim=True) == y[s].view(-1, 1, 1, 1)).float()
            pix_correct += float((hit * mask).sum())
            pix_total += float(mask.sum())
        n = len(y)
        return {
            f"{split}_loss": loss_sum / n,
            f"{split}_acc": correct / n,
            f"{split}_pixel_acc": pix_correct / max(pix_total, 1.0),
        }

    def pixel_map(self, out: Tensor) -> Tensor:
        return torch.softmax(out[:, 1:11], 1)  # (B, 10, H, W) class probabilities

    def preview(self, out: Tensor) -> Tensor:
        palette = torch.tensor(PALETTE, device=out.device)  # (10, 3)
        cls = out[:, 1:11].argmax(1)  # (B, H, W)
        alive = (out[:, :1] > self.data.threshold).float()
        return palette[cls].permute(0, 3, 1, 2) * alive + (1 - alive)

    def preview_key(self) -> list[tuple[str, tuple[float, float, float]]]:
        return [(str(k), (c[0], c[1], c[2])) for k, c in enumerate(PALETTE[:10])]

    def meta(self) -> dict[str, Any]:
        return {
            "classes": list(range(10)),
            "input": "grey digit in [0, 1]",
            "threshold": self.data.threshold,
        }
