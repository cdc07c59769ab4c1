"""Image classification on MedMNIST (2D subsets, any size; binary, multi-class, multi-label).

The image sits in the frozen input channels. Two readouts (``data.readout``, one object
each in :mod:`ncaflow.tasks.readouts`):

- ``vote``: every pixel predicts class logits in the output channels; the
  image's score per class is the share of pixels voting for it (majority vote).
- ``head``: a linear head on the spatially averaged hidden channels
  (``model.head`` = number of classes; ``model.output_channels`` may be 0).

Metrics are MedMNIST's own (``medmnist.evaluator.getACC/getAUC``) plus macro F1.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor, nn

from ncaflow.config import FRACTION, MAX_SIDE, ConfigError, Range, RunConfig, check, ranged
from ncaflow.data import DataError, load_medmnist, medmnist_info
from ncaflow.data.folder import OwnImages, check_folder_keys, load_own_classification
from ncaflow.tasks.augment import augment
from ncaflow.tasks.base import (
    Batch,
    CommonData,
    Predicts,
    Task,
    batches,
    fill_model_keys,
)
from ncaflow.tasks.losses import classification_loss
from ncaflow.tasks.readouts import Readout, readout_class
from ncaflow.tasks.transfer import upload

__all__ = ["Classification", "ClassificationData", "info_keys"]


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
    classes = readout_class(readout).classes_key
    return {"model.input_channels": info["n_channels"], classes: info["n_classes"]}


@dataclass(frozen=True, kw_only=True)
class ClassificationData(CommonData):
    flag: str = "breastmnist"
    # MedMNIST: 28, 64, 128 or 224; own data: N or [H, W]
    size: int | list[int] = ranged(28, Range(1, MAX_SIDE))
    # data.dataset: folder reads your own images and a labels CSV (config/OWN_DATA.md)
    dataset: Literal["medmnist", "folder"] = "medmnist"
    images: str | None = None
    labels: str | None = None  # CSV with the columns file,label
    test_images: str | None = None  # an own test split (else test_fraction of the images)
    test_labels: str | None = None
    # 1, 3 or 4; null: 1 if all images are grey, else 3
    channels: int | None = ranged(None, Range(1, 4))
    test_fraction: float = ranged(0.2, FRACTION)
    val_fraction: float = ranged(0.2, FRACTION)
    split_seed: int = ranged(0, Range(0, 2**32 - 1))
    readout: Literal["vote", "head"] = "vote"
    balanced: bool = False  # sample every class equally often in training
    # training batches only, per image: "hflip" mirrors left-right; "dihedral" (or true)
    # also flips up-down and transposes (all 8 symmetries of the square)
    augment: bool | Literal["hflip", "dihedral"] = False
    # and translates by up to this many pixels (edge pixels repeat)
    augment_shift: int = ranged(0, Range(0, MAX_SIDE))
    # evaluation averages the class scores of this many rollouts
    eval_rollouts: int = ranged(1, Range(1, 10_000))
    eval_hflip: bool = False  # ... of the image and of its left-right mirror each
    eval_batch: int = ranged(128, Range(1, 65536))
    # std of Gaussian noise on the seed's hidden channels (training and evaluation); 0: zeros
    seed_noise: float = ranged(0.0, Range(0, 100))

    def __post_init__(self) -> None:
        check_folder_keys(self, targets="labels", default="medmnist")
        if self.dataset == "medmnist":
            check(self.size in (28, 64, 128, 224), "data.size", "MedMNIST has 28, 64, 128, 224")
        elif isinstance(self.size, list) and self.size[0] != self.size[-1]:
            check(
                self.augment in (False, "hflip"), "data.augment", "use hflip for non-square sizes"
            )
        check(self.augment_shift >= 0, "data.augment_shift", "must be >= 0")
        check(self.eval_rollouts >= 1, "data.eval_rollouts", "must be >= 1")


# `ncaflow predict` prints (or writes) a table: label and class scores per image
LABELS = Predicts(name="labels", into_folder=False)


class Classification(Task):
    name = "classification"
    Data = ClassificationData
    ensembles = True
    select_metric = "val_auc"
    select_mode = "max"
    headline = (("test_acc", "test ACC"), ("test_auc", "test AUC"), ("test_f1", "F1"))
    predicts = LABELS
    focal_loss = True
    preview_title = "image + vote per cell"
    data: ClassificationData

    def __init__(self, *, config: RunConfig, device: torch.device | str = "cpu") -> None:
        super().__init__(config=config, device=device)
        # data.readout, chosen once: how final states become class logits
        self.reader: Readout = readout_class(self.data.readout)(model=config.model)

    @classmethod
    def derive_config(cls, raw: dict[str, Any]) -> None:
        """Fill in a parsed run config's image channels and classes from MedMNIST's INFO
        (``data.flag``, ``data.readout``) or, for own data, from the images and the labels
        CSV; a value given that contradicts them is an error."""
        data, model = raw.get("data", {}), raw.setdefault("model", {})
        if not isinstance(data, dict) or not isinstance(model, dict):
            return  # from_dict names the key that is not a mapping
        readout = data.get("readout", ClassificationData.readout)
        classes = readout_class(readout).classes_key
        if data.get("dataset", ClassificationData.dataset) == "folder":
            fill_model_keys(model, cls.own_data_keys(data, classes=classes))
            return
        flag = data.get("flag", ClassificationData.flag)
        if not isinstance(flag, str):
            return  # from_dict: expected a string
        derived = {}
        for key, value in info_keys(flag, str(readout)).items():
            what = "image channels" if key == "model.input_channels" else "classes"
            derived[key] = (value, f"MedMNIST's INFO for {flag} ({value} {what})")
        fill_model_keys(model, derived)

    def describe(self, info: dict[str, Any] | None = None) -> None:
        """Class count and label kind, from MedMNIST's metadata or (own data) the model's
        output size: no data read; setup() calls it with what it read."""
        if info is None and self.data.dataset == "folder":
            n = self.reader.configured_classes()
            info = {"task": "binary-class" if n == 2 else "multi-class", "label": range(n)}
        info = info or medmnist_info(self.data.flag)
        self.multilabel = info["task"].startswith("multi-label")
        self.medmnist_task = info["task"]
        self.n_classes = len(info["label"])

    def setup(self) -> None:
        d = self.data
        own = self._own_data() if d.dataset == "folder" else None
        info = own.info() if own is not None else medmnist_info(d.flag)
        self.describe(info)
        m = self.config.model
        self.require(
            m.input_channels == info["n_channels"],
            "model.input_channels",
            f"must be {info['n_channels']} for {d.flag} (image channels)",
        )
        self.require(
            self.reader.configured_classes() == self.n_classes,
            self.reader.classes_key,
            f"must be {self.n_classes} for {d.flag} with data.readout={d.readout}",
        )
        self.reader.check_model(self.require)
        if own is not None:
            x, y, parts = own.images, own.targets, own.parts
        else:
            load = {
                s: load_medmnist(
                    flag=d.flag,
                    split=s,
                    size=d.size,  # type: ignore[arg-type]  # an int for MedMNIST (__post_init__)
                    root=self.data.root,
                    mirror=d.mirror,
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
        y_train = self.splits["train"][1].cpu()  # the balanced draw's indices stay on the host
        self.by_class = (
            [torch.nonzero(y_train == k).flatten() for k in range(self.n_classes)]
            if d.balanced and not self.multilabel
            else None
        )

    def _own_data(self) -> OwnImages:
        """``data.dataset: folder``: the images, labels and splits, checked against the model."""
        d, m = self.data, self.config.model
        assert d.images is not None and d.labels is not None  # checked by ClassificationData
        own = load_own_classification(
            images=d.images,
            labels=d.labels,
            test_images=d.test_images,
            test_labels=d.test_labels,
            size=d.size,
            channels=d.channels,
            test_fraction=d.test_fraction,
            val_fraction=d.val_fraction,
            seed=d.split_seed,
        )
        self.own_names = own.names
        source = f"the {len(own.names)} classes in {d.labels}"
        self.require(
            m.input_channels == own.channels,
            "model.input_channels",
            f"must be {own.channels}: the images in {d.images} have {own.channels} channel(s) "
            "(or set data.channels to convert them)",
        )
        self.require(
            self.reader.configured_classes() == len(own.names),
            self.reader.classes_key,
            f"must be {len(own.names)} for {source} with data.readout={d.readout}",
        )
        return own

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
            idx = torch.randint(len(y), (b,), generator=generator)
        idx = upload(idx, self.device)
        images = x[idx]
        if self.data.augment or self.data.augment_shift:
            images = augment(images, generator, self.data.augment, self.data.augment_shift)
        state = self.seed_noise(self.seed(images), self.data.seed_noise, generator)
        return Batch(state=state, target=y[idx], index=idx)

    def logits(self, model: nn.Module, out: Tensor) -> Tensor:
        """Final states (B, C, H, W) -> per-pixel (B, K, H, W) or pooled (B, K) logits."""
        return self.reader.logits(model, out, self.n_classes)

    def loss_from_logits(self, logits: Tensor, target: Tensor, gamma: float = 0.0) -> Tensor:
        """(B,) loss; per-pixel logits are trained to predict the image's label everywhere.
        gamma > 0: the focal loss (:mod:`ncaflow.tasks.losses`), else cross-entropy."""
        if logits.ndim == 4:
            h, w = logits.shape[2:]
            if self.multilabel:
                target = target.float().view(*target.shape, 1, 1).expand(-1, -1, h, w)
            else:
                target = target.view(-1, 1, 1).expand(-1, h, w)
        loss = classification_loss(logits, target, multilabel=self.multilabel, gamma=gamma)
        return loss.flatten(1).mean(1) if loss.ndim > 1 else loss

    def loss(self, model: nn.Module, out: Tensor, batch: Batch) -> Tensor:
        """Training loss: focal with ``train.focal_gamma`` > 0 (evaluation reports the
        cross-entropy, so losses compare across gammas)."""
        gamma = self.config.train.focal_gamma
        return self.loss_from_logits(self.logits(model, out), batch.target, gamma)

    def scores(self, logits: Tensor) -> Tensor:
        """Per-class scores in [0, 1]: vote shares (vote) or probabilities (head)."""
        return self.reader.scores(logits, self.n_classes, self.multilabel)

    def eval_runs(
        self, model: nn.Module, x: Tensor, generator: torch.Generator
    ) -> Iterator[tuple[Tensor, int]]:
        """Every evaluation rollout of images ``x`` (B, C_in, H, W): ``(logits, runs)``.

        One per ensemble member x view (the image; with ``eval_hflip`` its mirror too) x
        ``eval_rollouts`` stochastic rollout, in that order (which fixes the fire masks).
        """
        views = [x, x.flip(-1)] if self.data.eval_hflip else [x]
        members = list(model) if isinstance(model, nn.ModuleList) else [model]  # an ensemble
        n = self.data.eval_rollouts * len(views) * len(members)
        for member, view in itertools.product(members, views):
            seed = self.seed(view)
            for _ in range(self.data.eval_rollouts):  # stochastic rollouts (fire masks)
                start = self.seed_noise(seed, self.data.seed_noise, generator)
                out = member(start, self.eval_steps, generator=generator)
                yield self.logits(member, out), n

    @torch.no_grad()
    def predict_scores(self, model: nn.Module, x: Tensor, generator: torch.Generator) -> Tensor:
        """Images (B, C_in, H, W) in [0, 1] -> (B, K) class scores, as evaluate() computes them."""
        runs = [self.scores(logits) for logits, _ in self.eval_runs(model, x, generator)]
        return torch.stack(runs).mean(0)

    def predict_batch(
        self, model: nn.Module, x: Tensor, generator: torch.Generator, labels: dict[str, Any]
    ) -> list[dict[str, Any]]:
        """Each image's class (for multi-label the classes scoring > 0.5), its name and the
        per-class scores, as :meth:`evaluate` scores them."""
        records = []
        for row in self.predict_scores(model, x, generator).cpu().tolist():
            if self.multilabel:
                chosen = [k for k, v in enumerate(row) if v > 0.5]
                label: int | list[int] = chosen
                name: str | list[str] = [str(labels.get(str(k), k)) for k in chosen]
            else:
                label = max(range(len(row)), key=row.__getitem__)
                name = str(labels.get(str(label), label))
            records.append({"label": label, "name": name, "scores": row})
        return records

    @torch.no_grad()
    def evaluate(
        self, model: nn.Module, split: str, generator: torch.Generator
    ) -> dict[str, float]:
        from medmnist.evaluator import getACC, getAUC
        from sklearn.metrics import f1_score  # a 1 s import: not for every config check

        x, y = self.splits[split]
        self.require_samples(split, len(y))
        loss_sum, scores = 0.0, []
        for s in batches(len(y), self.data.eval_batch):
            runs = []
            for logits, n in self.eval_runs(model, x[s], generator):
                loss_sum += self.loss_from_logits(logits, y[s]).sum().item() / n
                runs.append(self.scores(logits))
            scores.append(torch.stack(runs).mean(0).cpu())  # the average of every run's scores
        score = torch.cat(scores).numpy()
        truth = y.cpu().numpy()
        if len(truth) == 1:  # medmnist's metrics squeeze one sample to a scalar: give it twice
            score, truth = np.concatenate([score, score]), np.concatenate([truth, truth])
        if self.multilabel:
            pred = (score > 0.5).astype(int)
            f1 = f1_score(truth, pred, average="macro", zero_division=0)
        else:
            f1 = f1_score(truth, score.argmax(1), average="macro", zero_division=0)
        try:
            auc = float(getAUC(truth, score, self.medmnist_task))
        except (ValueError, TypeError):  # a split of one class (or one sample) has no AUC
            auc = float("nan")
        return {
            f"{split}_loss": loss_sum / len(y),
            f"{split}_acc": float(getACC(truth, score, self.medmnist_task)),
            f"{split}_auc": auc,
            f"{split}_f1": float(f1),
        }

    def pixel_map(self, out: Tensor) -> Tensor:
        """Per-pixel class probabilities (vote readout); the hidden state's mean for a head."""
        return self.reader.pixel_map(out, self.n_classes, self.multilabel)

    def preview(self, out: Tensor) -> Tensor:
        """The image (grey or RGB) tinted by each pixel's vote."""
        image = out[:, : self.config.model.input_channels].mean(1, keepdim=True).clamp(0, 1)
        return self.reader.preview(out, image, self.n_classes)

    def meta(self) -> dict[str, Any]:
        if self.data.dataset == "folder":  # the label mapping: class index -> CSV label
            names = getattr(self, "own_names", [])
            labels = {str(i): name for i, name in enumerate(names)}
            return {
                "dataset": "folder",
                "labels": labels,
                "task": "binary-class" if len(names) == 2 else "multi-class",
                "size": self.data.size,
                "readout": self.data.readout,
                "input": "image in [0, 1]",
            }
        info = medmnist_info(self.data.flag)
        return {
            "flag": self.data.flag,
            "labels": info["label"],
            "task": info["task"],
            "size": self.data.size,
            "readout": self.data.readout,
            "input": "image in [0, 1]",
        }
