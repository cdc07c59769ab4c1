"""Binary segmentation: one logit channel per pixel, Dice + BCE loss.

Data: Kvasir-SEG polyps (``data.dataset: kvasir``) or your own folders of images and
masks (``data.dataset: folder``, see config/OWN_DATA.md). Kvasir-SEG has no official
split: a fixed ``test_fraction`` of the images is held out by ``split_seed`` and never
seen in training; train/val come from the rest (or from a folds file over the rest).
Own data may bring its test split as a second pair of folders instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ncaflow.config import FRACTION, MAX_SIDE, MAX_STEPS, ModelConfig, Range, check, ranged
from ncaflow.data import load_kvasir
from ncaflow.data.folder import check_folder_keys, load_own_segmentation
from ncaflow.model.uncertainty import error_auroc, step_window, stochastic_rollouts
from ncaflow.tasks.augment import augment
from ncaflow.tasks.base import Batch, CommonData, Predicts, Task, batches, fill_model_keys
from ncaflow.tasks.transfer import upload

__all__ = ["Segmentation", "SegmentationData", "dice_iou", "fixed_split"]


@dataclass(frozen=True, kw_only=True)
class SegmentationData(CommonData):
    dataset: Literal["kvasir", "folder"] = "kvasir"
    images: str | None = None  # folder: image files (any of .png .jpg .bmp .tif)
    masks: str | None = None  # folder: one mask per image, same stem, same size
    test_images: str | None = None  # folder: an own test split (else test_fraction)
    test_masks: str | None = None
    # folder: 1, 3 or 4; null: 1 if all images are grey, else 3
    channels: int | None = ranged(None, Range(1, 4))
    size: int | list[int] = ranged(64, Range(1, MAX_SIDE))  # N (N x N) or [H, W]
    test_fraction: float = ranged(0.2, FRACTION)
    val_fraction: float = ranged(0.2, FRACTION)
    split_seed: int = ranged(0, Range(0, 2**32 - 1))
    augment: bool = True
    bce_weight: float = ranged(1.0, Range(0, 1e6))
    eval_batch: int = ranged(16, Range(1, 65536))
    # rollouts for the test split's uncertainty AUROC; 0: skip
    uncertainty_samples: int = ranged(8, Range(0, 10_000))
    # the same from the last W steps of one rollout (model.uncertainty.step_window); 0: skip
    uncertainty_window: int = ranged(0, Range(0, MAX_STEPS))

    def __post_init__(self) -> None:
        check_folder_keys(self, targets="masks", default="kvasir")


def fixed_split(
    n: int, *, test_fraction: float, val_fraction: float, seed: int
) -> dict[str, np.ndarray]:
    """Train/val/test index arrays; at least one image in each of test and val when n >= 3."""
    perm = np.random.default_rng(seed).permutation(n)
    n_test = max(1, round(n * test_fraction)) if n >= 3 else 0
    n_val = max(1, round(n * val_fraction)) if n >= 3 else 0
    return {
        "test": np.sort(perm[:n_test]),
        "val": np.sort(perm[n_test : n_test + n_val]),
        "train": np.sort(perm[n_test + n_val :]),
    }


def dice_iou(pred: Tensor, truth: Tensor) -> tuple[Tensor, Tensor]:
    """Per-image Dice and IoU of binary (B, 1, H, W) masks; empty-vs-empty counts as 1."""
    inter = (pred * truth).sum(dim=(1, 2, 3))
    total = pred.sum(dim=(1, 2, 3)) + truth.sum(dim=(1, 2, 3))
    union = total - inter
    dice = torch.where(total > 0, 2 * inter / total.clamp(min=1e-9), torch.ones_like(total))
    iou = torch.where(union > 0, inter / union.clamp(min=1e-9), torch.ones_like(union))
    return dice, iou


# `ncaflow predict` writes one 0/255 mask PNG per image into the --out folder
MASKS = Predicts(name="masks", into_folder=True)


class Segmentation(Task):
    name = "segmentation"
    Data = SegmentationData
    select_metric = "val_dice"
    select_mode = "max"
    readout = "mask"
    figures = ("overlay",)
    headline = (("test_dice", "test Dice"), ("test_iou", "IoU"))
    predicts = MASKS
    preview_title = "image + prediction"
    data: SegmentationData

    @classmethod
    def derive_config(cls, raw: dict[str, Any]) -> None:
        """Own data (``data.dataset: folder``): ``model.input_channels`` from
        ``data.channels`` or the images; a value given that contradicts them is an error."""
        data, model = raw.get("data", {}), raw.setdefault("model", {})
        if not isinstance(data, dict) or not isinstance(model, dict):
            return  # from_dict names the key that is not a mapping
        if data.get("dataset", SegmentationData.dataset) == "folder":
            fill_model_keys(model, cls.own_data_keys(data, classes=None))

    @classmethod
    def export_check(cls, model: ModelConfig) -> None:
        ok = model.output_channels >= 1
        check(ok, "model.output_channels", "segmentation needs >= 1 (the mask logit)")

    def check_model(self) -> None:
        m, d = self.config.model, self.data
        if d.dataset == "kvasir":
            self.require(m.input_channels == 3, "model.input_channels", "must be 3 (RGB image)")
        elif d.channels is not None:
            self.require(
                m.input_channels == d.channels,
                "model.input_channels",
                f"must be {d.channels} (data.channels)",
            )
        self.require(m.output_channels == 1, "model.output_channels", "must be 1 (mask logit)")
        window, steps = d.uncertainty_window, self.eval_steps
        self.require(
            window == 0 or 2 <= window <= steps,
            "data.uncertainty_window",
            f"give 0 (off) or 2..{steps} steps (the evaluation rollout, train.steps[-1])",
        )

    def setup(self) -> None:
        d = self.data
        if d.dataset == "folder":
            assert d.images is not None and d.masks is not None  # checked by SegmentationData
            own = load_own_segmentation(
                images=d.images,
                masks=d.masks,
                test_images=d.test_images,
                test_masks=d.test_masks,
                size=d.size,
                channels=d.channels,
                test_fraction=d.test_fraction,
                val_fraction=d.val_fraction,
                seed=d.split_seed,
            )
            self.require(
                self.config.model.input_channels == own.channels,
                "model.input_channels",
                f"must be {own.channels}: the images in {d.images} have {own.channels} "
                "channel(s) (or set data.channels to convert them)",
            )
            images, masks = torch.from_numpy(own.images), torch.from_numpy(own.targets)
            self.ids, parts = own.ids, own.parts
        else:
            images, masks, self.ids = load_kvasir(
                size=self._kvasir_size(), root=self.data.root, mirror=d.mirror
            )
            parts = fixed_split(
                len(self.ids),
                test_fraction=d.test_fraction,
                val_fraction=d.val_fraction,
                seed=d.split_seed,
            )
        # k folds over train+val; the held-out test images stay out
        parts = self.apply_folds(parts, None, images.numpy(), masks.numpy())
        self.splits = {
            k: (images[v].to(self.device), masks[v].to(self.device)) for k, v in parts.items()
        }

    def _kvasir_size(self) -> int:
        size = self.data.size
        if isinstance(size, list):
            self.require(size[0] == size[-1], "data.size", "Kvasir-SEG images are square: give N")
            return size[0]
        return size

    def seed(self, images: Tensor) -> Tensor:
        return self.seed_state(images, self.config.model.channels)

    def sample(self, generator: torch.Generator) -> Batch:
        x, y = self.splits["train"]
        idx = upload(
            torch.randint(len(x), (self.config.train.batch_size,), generator=generator), self.device
        )
        both = torch.cat([x[idx], y[idx]], 1)  # augment image and mask together
        if self.data.augment:
            both = augment(both, generator, "dihedral" if x.shape[2] == x.shape[3] else "hflip")
        c = self.config.model.input_channels
        return Batch(state=self.seed(both[:, :c]), target=both[:, c:], index=idx)

    def logit(self, out: Tensor) -> Tensor:
        c = self.config.model.input_channels
        return out[:, c : c + 1]  # (B, 1, H, W)

    def loss_from_logit(self, logit: Tensor, target: Tensor) -> Tensor:
        p = torch.sigmoid(logit)
        inter = (p * target).sum(dim=(1, 2, 3))
        dice = 1 - (2 * inter + 1) / (p.sum(dim=(1, 2, 3)) + target.sum(dim=(1, 2, 3)) + 1)
        bce = F.binary_cross_entropy_with_logits(logit, target, reduction="none").mean(
            dim=(1, 2, 3)
        )
        return dice + self.data.bce_weight * bce

    def loss(self, model: nn.Module, out: Tensor, batch: Batch) -> Tensor:
        return self.loss_from_logit(self.logit(out), batch.target)

    @torch.no_grad()
    def predict_batch(
        self, model: nn.Module, x: Tensor, generator: torch.Generator, labels: dict[str, Any]
    ) -> list[dict[str, Any]]:
        """Each image's mask at the model's size: logit > 0, the threshold evaluate uses."""
        out = model(self.seed(x), self.eval_steps, generator=generator)
        masks = (self.logit(out) > 0).cpu().numpy()  # (B, 1, H, W)
        return [{"mask": m[0]} for m in masks]

    @torch.no_grad()
    def evaluate(
        self, model: nn.Module, split: str, generator: torch.Generator
    ) -> dict[str, float]:
        x, y = self.splits[split]
        self.require_samples(split, len(x))
        loss, dice, iou = [], [], []
        for s in batches(len(x), self.data.eval_batch):
            logit = self.logit(model(self.seed(x[s]), self.eval_steps, generator=generator))
            loss.append(self.loss_from_logit(logit, y[s]))
            d, i = dice_iou((logit > 0).float(), y[s])
            dice.append(d)
            iou.append(i)
        metrics = {
            f"{split}_loss": torch.cat(loss).mean().item(),
            f"{split}_dice": torch.cat(dice).mean().item(),
            f"{split}_iou": torch.cat(iou).mean().item(),
        }
        if split == "test" and self.data.uncertainty_samples >= 2:
            mean, var = stochastic_rollouts(
                model,
                self.seed(x),
                self.eval_steps,
                n=self.data.uncertainty_samples,
                generator=generator,
                readout=self.pixel_map,
            )
            metrics["test_uncertainty_auroc"] = error_auroc(mean, y, var)
            metrics["test_mean_variance"] = var.mean().item()
        window = self.data.uncertainty_window
        if split == "test" and window >= 2:
            mean, var = step_window(
                model,
                self.seed(x),
                self.eval_steps,
                window=window,
                generator=generator,
                readout=self.pixel_map,
            )
            metrics["test_window_uncertainty_auroc"] = error_auroc(mean, y, var)
            metrics["test_window_mean_variance"] = var.mean().item()
        return metrics

    def pixel_map(self, out: Tensor) -> Tensor:
        return torch.sigmoid(self.logit(out))  # (B, 1, H, W) polyp probability

    def preview(self, out: Tensor) -> Tensor:
        image = out[:, : self.config.model.input_channels][:, :3].clamp(0, 1)
        image = image.expand(-1, 3, -1, -1) if image.shape[1] == 1 else image  # grey
        mask = (self.logit(out) > 0).float()
        tint = torch.tensor([0.0, 1.0, 0.0], device=out.device).view(1, 3, 1, 1)
        shown = image * (1 - 0.5 * mask) + 0.5 * mask * tint
        # the predicted region's border in yellow: mask cells with a cell outside beside them
        inside = -F.max_pool2d(-mask, 3, stride=1, padding=1)  # erosion, (B, 1, H, W)
        edge = mask - inside
        yellow = torch.tensor([1.0, 1.0, 0.0], device=out.device).view(1, 3, 1, 1)
        return shown * (1 - edge) + edge * yellow

    def preview_key(self) -> list[tuple[str, tuple[float, float, float]]]:
        return [("predicted polyp", (0.0, 1.0, 0.0)), ("its border", (1.0, 1.0, 0.0))]

    def meta(self) -> dict[str, Any]:
        d = self.data
        kind = {1: "grey", 3: "RGB", 4: "RGBA"}.get(self.config.model.input_channels, "image")
        meta: dict[str, Any] = {"size": d.size, "input": f"{kind} image in [0, 1]"}
        if d.dataset == "folder":
            meta["dataset"] = "folder"
        return {**meta, "mask": "logit > 0"}
