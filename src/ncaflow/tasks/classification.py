"""Image classification on MedMNIST (2D subsets, any size; binary, multi-class, multi-label).

The image sits in the frozen input channels. Two readouts:

- ``vote``: every pixel predicts class logits in the output channels; the
  image's score per class is the share of pixels voting for it (majority vote).
- ``head``: a linear head on the spatially averaged hidden channels
  (``model.head`` = number of classes; ``model.output_channels`` may be 0).

Metrics are MedMNIST's own (``medmnist.evaluator.getACC/getAUC``) plus macro F1.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import f1_score
from torch import Tensor, nn

from ncaflow.config import ConfigError, check
from ncaflow.data import DataError, load_medmnist, medmnist_info
from ncaflow.tasks.base import PALETTE, Batch, CommonData, Task, batches

__all__ = ["Classification", "ClassificationData", "augment", "info_keys"]


def info_keys(flag: str, readout: str) -> dict[str, int]:
    """The model keys MedMNIST's own INFO decides for a subset and readout.

    ``{"model.input_channels": n_channels, "model.head" | "model.output_channels":
    n_classes}`` (the head with ``readout="head"``, per-pixel votes otherwise).  Raises
    ConfigError naming ``data.flag`` for a flag that is not a 2D MedMNIST subset.
    """
    try:
        info = medmnist_info(flag)
    except DataError as err:
        raise ConfigError(f"key 'data.flag': {err}", "data.flag") from None
    classes = "model.head" if readout == "head" else "model.output_channels"
    return {"model.input_channels": info["n_channels"], classes: info["n_classes"]}


@dataclass(frozen=True, kw_only=True)
class ClassificationData(CommonData):
    flag: str = "breastmnist"
    size: Literal[28, 64, 128, 224] = 28
    readout: Literal["vote", "head"] = "vote"
    balanced: bool = False  # sample every class equally often in training
    # training batches only, per image: "hflip" mirrors left-right; "dihedral" (or true)
    # also flips up-down and transposes (all 8 symmetries of the square)
    augment: bool | Literal["hflip", "dihedral"] = False
    augment_shift: int = 0  # and translates by up to this many pixels (edge pixels repeat)
    eval_rollouts: int = 1  # evaluation averages the class scores of this many rollouts
    eval_hflip: bool = False  # ... of the image and of its left-right mirror each
    eval_batch: int = 128

    def __post_init__(self) -> None:
        check(self.augment_shift >= 0, "data.augment_shift", "must be >= 0")
        check(self.eval_rollouts >= 1, "data.eval_rollouts", "must be >= 1")


def augment(
    x: Tensor, generator: torch.Generator, mode: str | bool = "dihedral", shift: int = 0
) -> Tensor:
    """Randomly transform every (C, H, W) image of x on its own (see ClassificationData.augment).

    mode: "hflip", "dihedral" (True means "dihedral"; "dihedral" needs square images);
    shift: translate by up to this many pixels in each direction, repeating the edge.
    """
    b = x.shape[0]

    def coin() -> Tensor:
        return (torch.rand(b, generator=generator) < 0.5).to(x.device).view(b, 1, 1, 1)

    if mode:
        x = torch.where(coin(), x.flip(3), x)
    if mode is True or mode == "dihedral":
        x = torch.where(coin(), x.flip(2), x)
        x = torch.where(coin(), x.transpose(2, 3), x)
    if shift:
        h, w = x.shape[2:]
        padded = F.pad(x, (shift, shift, shift, shift), mode="replicate")
        offsets = torch.randint(0, 2 * shift + 1, (b, 2), generator=generator).tolist()
        x = torch.stack([padded[i, :, y : y + h, z : z + w] for i, (y, z) in enumerate(offsets)])
    return x


class Classification(Task):
    name = "classification"
    Data = ClassificationData
    select_metric = "val_auc"
    select_mode = "max"
    data: ClassificationData

    @classmethod
    def derive_config(cls, raw: dict[str, Any]) -> None:
        """Fill in a parsed run config's image channels and classes from MedMNIST's INFO
        (``data.flag``, ``data.readout``); a value given that contradicts INFO is an error."""
        data, model = raw.get("data", {}), raw.setdefault("model", {})
        if not isinstance(data, dict) or not isinstance(model, dict):
            return  # from_dict names the key that is not a mapping
        flag = data.get("flag", ClassificationData.flag)
        readout = data.get("readout", ClassificationData.readout)
        if not isinstance(flag, str):
            return  # from_dict: expected a string
        for key, value in info_keys(flag, str(readout)).items():
            name = key.split(".")[1]
            given = model.setdefault(name, value)
            if given != value or isinstance(given, bool):
                what = "image channels" if name == "input_channels" else "classes"
                raise ConfigError(
                    f"key '{key}': {given!r} contradicts MedMNIST's INFO for {flag} "
                    f"({value} {what}); set it to {value} or leave it out",
                    key,
                )

    def setup(self) -> None:
        d = self.data
        info = medmnist_info(d.flag)
        self.multilabel = info["task"].startswith("multi-label")
        self.medmnist_task = info["task"]
        self.n_classes = len(info["label"])
        m = self.config.model
        self.require(
            m.input_channels == info["n_channels"],
            "model.input_channels",
            f"must be {info['n_channels']} for {d.flag} (image channels)",
        )
        if d.readout == "vote":
            self.require(
                m.output_channels == self.n_classes,
                "model.output_channels",
                f"must be {self.n_classes} for {d.flag} with data.readout=vote",
            )
        else:
            self.require(
                m.head == self.n_classes,
                "model.head",
                f"must be {self.n_classes} for {d.flag} with data.readout=head",
            )
            self.require(
                m.hidden_channels > 0, "model.hidden_channels", "the head reads hidden channels"
            )
        load = {
            s: load_medmnist(
                flag=d.flag, split=s, size=d.size, cache_dir=self.cache_dir, mirror=d.mirror
            )
            for s in ("train", "val", "test")
        }
        x = np.concatenate([load[s][0] for s in ("train", "val", "test")])
        y = np.concatenate([load[s][1] for s in ("train", "val", "test")])
        ends = np.cumsum([len(load[s][1]) for s in ("train", "val", "test")])
        parts = dict(
            zip(("train", "val", "test"), np.split(np.arange(len(y)), ends[:-1]), strict=True)
        )
        parts = self.apply_folds(parts, y, x, y)  # k folds over official train+val
        images, labels = torch.from_numpy(x).float(), torch.from_numpy(y).long()
        self.splits = {
            s: (images[i].to(self.device), labels[i].to(self.device)) for s, i in parts.items()
        }
        y_train = self.splits["train"][1]
        self.by_class = (
            [torch.nonzero(y_train == k).flatten() for k in range(self.n_classes)]
            if d.balanced and not self.multilabel
            else None
        )

    def seed(self, images: Tensor) -> Tensor:
        return self.seed_state(images, self.config.model.channels)

    def sample(self, generator: torch.Generator) -> Batch:
        x, y = self.splits["train"]
        b = self.config.train.batch_size
        if self.by_class is not None:
            present = [c for c in self.by_class if len(c)]
            cls = torch.randint(len(present), (b,), generator=generator).tolist()
            idx = torch.stack(
                [present[c][torch.randint(len(present[c]), (1,), generator=generator)] for c in cls]
            ).flatten()
        else:
            idx = torch.randint(len(y), (b,), generator=generator).to(self.device)
        images = x[idx]
        if self.data.augment or self.data.augment_shift:
            images = augment(images, generator, self.data.augment, self.data.augment_shift)
        return Batch(state=self.seed(images), target=y[idx], index=idx)

    def logits(self, model: nn.Module, out: Tensor) -> Tensor:
        """Final states (B, C, H, W) -> per-pixel (B, K, H, W) or pooled (B, K) logits."""
        m = self.config.model
        if self.data.readout == "head":
            hidden = out[:, m.input_channels + m.output_channels :].mean(dim=(2, 3))  # (B, hidden)
            logits: Tensor = model.head(hidden)  # type: ignore[operator]
            return logits
        return out[:, m.input_channels : m.input_channels + self.n_classes]

    def loss_from_logits(self, logits: Tensor, target: Tensor) -> Tensor:
        """(B,) loss; per-pixel logits are trained to predict the image's label everywhere."""
        if logits.ndim == 4:
            h, w = logits.shape[2:]
            if self.multilabel:
                target = target.float().view(*target.shape, 1, 1).expand(-1, -1, h, w)
            else:
                target = target.view(-1, 1, 1).expand(-1, h, w)
        if self.multilabel:
            loss = F.binary_cross_entropy_with_logits(logits, target.float(), reduction="none")
        else:
            loss = F.cross_entropy(logits, target, reduction="none")
        return loss.flatten(1).mean(1) if loss.ndim > 1 else loss

    def loss(self, model: nn.Module, out: Tensor, batch: Batch) -> Tensor:
        return self.loss_from_logits(self.logits(model, out), batch.target)

    def scores(self, logits: Tensor) -> Tensor:
        """Per-class scores in [0, 1]: vote shares (vote) or probabilities (head)."""
        if self.multilabel:
            p = torch.sigmoid(logits)
            return p.mean(dim=(2, 3)) if p.ndim == 4 else p
        if logits.ndim == 4:
            votes = F.one_hot(logits.argmax(1), self.n_classes).float()  # (B, H, W, K)
            return votes.mean(dim=(1, 2))
        return torch.softmax(logits, 1)

    @torch.no_grad()
    def evaluate(
        self, model: nn.Module, split: str, generator: torch.Generator
    ) -> dict[str, float]:
        from medmnist.evaluator import getACC, getAUC

        x, y = self.splits[split]
        views = [x, x.flip(-1)] if self.data.eval_hflip else [x]
        members = list(model) if isinstance(model, nn.ModuleList) else [model]  # an ensemble
        n = self.data.eval_rollouts * len(views) * len(members)
        loss_sum, scores = 0.0, []
        for s in batches(len(y), self.data.eval_batch):
            runs = []
            for member, view in itertools.product(members, views):
                seed = self.seed(view[s])
                for _ in range(self.data.eval_rollouts):  # stochastic rollouts (fire masks)
                    out = member(seed, self.eval_steps, generator=generator)
                    logits = self.logits(member, out)
                    loss_sum += self.loss_from_logits(logits, y[s]).sum().item() / n
                    runs.append(self.scores(logits))
            scores.append(torch.stack(runs).mean(0).cpu())  # the average of every run's scores
        score = torch.cat(scores).numpy()
        truth = y.cpu().numpy()
        if self.multilabel:
            pred = (score > 0.5).astype(int)
            f1 = f1_score(truth, pred, average="macro", zero_division=0)
        else:
            f1 = f1_score(truth, score.argmax(1), average="macro", zero_division=0)
        try:
            auc = float(getAUC(truth, score, self.medmnist_task))
        except ValueError:  # a split with one class only has no AUC
            auc = float("nan")
        return {
            f"{split}_loss": loss_sum / len(y),
            f"{split}_acc": float(getACC(truth, score, self.medmnist_task)),
            f"{split}_auc": auc,
            f"{split}_f1": float(f1),
        }

    def pixel_map(self, out: Tensor) -> Tensor:
        """Per-pixel class probabilities (vote readout); the hidden state's mean for a head."""
        m = self.config.model
        if self.data.readout == "head":
            return out[:, m.input_channels + m.output_channels :].mean(1, keepdim=True)
        logits = out[:, m.input_channels : m.input_channels + self.n_classes]
        return torch.sigmoid(logits) if self.multilabel else torch.softmax(logits, 1)

    def preview(self, out: Tensor) -> Tensor:
        """The image (grey or RGB) tinted by each pixel's vote."""
        m = self.config.model
        image = out[:, : m.input_channels].mean(1, keepdim=True).clamp(0, 1)
        if self.data.readout == "head":
            return image.expand(-1, 3, -1, -1)
        palette = torch.tensor(PALETTE, device=out.device)
        votes = out[:, m.input_channels : m.input_channels + self.n_classes].argmax(1)
        colour = palette[votes % len(PALETTE)].permute(0, 3, 1, 2)  # (B, 3, H, W)
        return 0.5 * image + 0.5 * colour

    def meta(self) -> dict[str, Any]:
        info = medmnist_info(self.data.flag)
        return {
            "flag": self.data.flag,
            "labels": info["label"],
            "task": info["task"],
            "size": self.data.size,
            "readout": self.data.readout,
            "input": "image in [0, 1]",
        }
