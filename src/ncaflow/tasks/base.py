"""The contract between the trainer and a task.

The trainer owns the loop (optimiser, checkpoints, logging, early stopping);
a task owns the data and everything it means: the seed state, the loss, the
sample pool, the metrics and what a prediction is.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor, nn

from ncaflow.config import ConfigError, ModelConfig, Range, RunConfig, check, from_dict, ranged
from ncaflow.data.stored import DEFAULT_ROOT

__all__ = ["PALETTE", "Batch", "CommonData", "Predicts", "Task", "batches"]

# Ten distinguishable colours (RGB in [0, 1]) for per-pixel class maps.
PALETTE = [
    [0.12, 0.47, 0.71], [1.0, 0.5, 0.05], [0.17, 0.63, 0.17], [0.84, 0.15, 0.16], [0.58, 0.4, 0.74],
    [0.55, 0.34, 0.29], [0.89, 0.47, 0.76], [0.5, 0.5, 0.5], [0.74, 0.74, 0.13], [0.09, 0.75, 0.81],
]  # fmt: skip


@dataclass(kw_only=True)
class Batch:
    """One training batch.

    state:  (B, C, H, W) seed state the rollout starts from
    target: task-specific target (RGBA image, labels, masks)
    mask:   (B, 1, H, W) cells that count in the loss, or None for all
    index:  (B,) pool or dataset indices, for tasks that write back
    """

    state: Tensor
    target: Tensor
    mask: Tensor | None = None
    index: Tensor | None = None


@dataclass(frozen=True, kw_only=True)
class CommonData:
    """Data keys every task shares: where files live and which fold to train."""

    root: str = DEFAULT_ROOT  # download cache (a model file's is ignored: data.stored)
    mirror: str | None = None  # local mirror folder (else $NCAFLOW_DATA_MIRROR)
    folds: str | None = None  # folds JSON written by `ncaflow prepare`
    fold: int = ranged(0, Range(0, 1000))
    eval_batch: int = ranged(64, Range(1, 65536))  # samples per batch at evaluation and prediction


@dataclass(frozen=True, kw_only=True)
class Predicts:
    """What ``ncaflow predict`` writes for a task's image files (the task module owns one).

    name: what the messages call it ("labels", "masks")
    into_folder: one image per input into the ``--out`` folder (which it then needs);
        else a table, printed or written to an ``--out`` file
    """

    name: str
    into_folder: bool


class Task(ABC):
    """Base class; subclasses set ``name``, ``Data`` and the metric to select on."""

    name: ClassVar[str]
    Data: ClassVar[type[CommonData]] = CommonData
    select_metric: ClassVar[str] = "val_loss"
    select_mode: ClassVar[str] = "min"
    # How a final state is read (the C export implements each): "rgba" the image in channels
    # 0-3, "vote" the majority of per-cell class logits, "mask" the sign of the first output
    # channel; a classification model with a linear head reads it out instead ("head").
    readout: ClassVar[str] = "vote"
    # per-model workflow figures, by name (ncaflow.viz.figures.PER_MODEL draws each)
    figures: ClassVar[tuple[str, ...]] = ()
    ensembles: ClassVar[bool] = False  # `ncaflow evaluate --model A --model B` averages scores
    # The test metrics a reference-runs table shows: (metrics.json key, label)
    headline: ClassVar[tuple[tuple[str, str], ...]] = (("test_loss", "test loss"),)
    # What `ncaflow predict` writes for image files; None refuses, saying predict_instead
    predicts: ClassVar[Predicts | None] = None
    predict_instead: ClassVar[str] = "predict does not support this task"
    preview_title: ClassVar[str] = "prediction"  # what `preview` shows, a few words (GIFs)
    focal_loss: ClassVar[bool] = False  # its loss honours train.focal_gamma

    @classmethod
    def derive_config(cls, raw: dict[str, Any]) -> None:
        """Fill in (in place) the model keys of a parsed run config that this task's data
        decides, before it is checked; a value given that contradicts them is a
        ConfigError. Default: nothing."""

    @classmethod
    def export_check(cls, model: ModelConfig) -> None:
        """Raise ConfigError when a model of this config cannot be exported for this task."""

    @classmethod
    def vote_threshold(cls, meta: dict[str, Any]) -> float | None:
        """ "vote" readout: count only cells whose channel 0 exceeds this (None: every cell)."""
        return None

    @classmethod
    def grid_size(cls, data: dict[str, Any], meta: dict[str, Any]) -> tuple[int, int] | None:
        """The grid a model was trained on, from its ``data:`` config and saved metadata."""
        size = meta.get("size", data.get("size"))
        if isinstance(size, list | tuple):  # own data (data.dataset: folder) may give [H, W]
            return int(size[0]), int(size[-1])
        return None if size is None else (int(size), int(size))

    def __init__(self, *, config: RunConfig, device: torch.device | str = "cpu") -> None:
        self.config = config
        self.data = self.data_config(config.data)
        self.device = torch.device(device)
        # split name -> (inputs, targets) on self.device, filled by setup() (tasks with a
        # data set; growing has none)
        self.splits: dict[str, tuple[Tensor, Tensor]] = {}
        check(
            self.focal_loss or config.train.focal_gamma == 0.0,
            "train.focal_gamma",
            f"task {self.name!r} has no focal loss (classification has); set it to 0",
        )
        self.check_model()

    def describe(self) -> None:
        """Learn what predictions need without reading the data set (the class count,
        say). Default: nothing."""

    @classmethod
    def own_data_keys(cls, data: dict[str, Any], *, classes: str | None) -> dict[str, Any]:
        """The model keys own data (``data.dataset: folder``) decides, from its files
        (:func:`ncaflow.data.folder.derived_keys`), once the data section itself is valid;
        a file that cannot be read is a ConfigError naming its key."""
        from ncaflow.data import DataError
        from ncaflow.data.folder import derived_keys

        cls.data_config(data)  # the folder keys first: missing, unknown or out of range
        try:
            return derived_keys(data, classes=classes)
        except DataError as err:
            key = str(err).split(":", 1)[0]
            raise ConfigError(str(err), key if key.startswith("data.") else None) from None

    @classmethod
    def data_config(cls, raw: dict[str, Any]) -> Any:
        """Validate the ``data:`` section into this task's ``Data`` dataclass."""
        return from_dict(cls.Data, raw, "data")

    def check_model(self) -> None:
        """Raise ConfigError when the model config cannot serve this task."""

    def require(self, ok: bool, key: str, message: str) -> None:
        check(ok, key, message)

    def require_samples(self, split: str, n: int) -> None:
        """Refuse to evaluate an empty split, naming the key that sizes it."""
        if n > 0:
            return
        folds = getattr(self.data, "folds", None)
        if folds and split == "val":
            self.require(
                False,
                "data.folds",
                f"fold {self.data.fold} of {folds} has an empty val split (no samples to "
                "evaluate); write the folds file again with `ncaflow prepare`",
            )
        keys = [f"data.{split}_fraction", f"data.{split}_size"]
        key = next((k for k in keys if hasattr(self.data, k.split(".")[1])), "data")
        self.require(
            False, key, f"the {split} split is empty (no samples to evaluate); raise {key}"
        )

    # -- training ----------------------------------------------------------------

    @abstractmethod
    def setup(self) -> None:
        """Load the data onto ``self.device``. Called once before training or evaluation."""

    @abstractmethod
    def sample(self, generator: torch.Generator) -> Batch:
        """Draw a training batch (``generator`` lives on the CPU)."""

    @abstractmethod
    def loss(self, model: nn.Module, out: Tensor, batch: Batch) -> Tensor:
        """(B, C, H, W) final states -> (B,) per-sample loss (``model`` for readout heads)."""

    def after_step(self, batch: Batch, out: Tensor, losses: Tensor) -> None:
        """Write results back (sample pools). Default: nothing."""

    # -- folds ---------------------------------------------------------------------

    def apply_folds(
        self, parts: dict[str, np.ndarray], labels: np.ndarray | None, *data: np.ndarray
    ) -> dict[str, np.ndarray]:
        """Pool the train and val indices of ``parts`` (the test split never joins), record
        the pool for ``ncaflow prepare``, and with ``data.folds`` set return ``parts`` with
        train/val replaced by that fold's. ``labels`` and ``data`` are indexed by sample."""
        from ncaflow.data import array_checksum, fold_indices, read_folds

        pool = np.sort(np.concatenate([parts["train"], parts["val"]]))
        checksum = array_checksum(*(a[pool] for a in data))
        self.fold_pool_info = (None if labels is None else labels[pool], len(pool), checksum)
        if self.data.folds is None:
            return parts
        train, val = fold_indices(read_folds(self.data.folds, checksum=checksum), self.data.fold)
        return {**parts, "train": pool[train], "val": pool[val]}

    def fold_pool(self) -> tuple[np.ndarray | None, int, str]:
        """(labels or None, pool size, data checksum) for ``ncaflow prepare``; after setup()."""
        if not hasattr(self, "fold_pool_info"):
            raise ConfigError(f"task {self.name!r} has no train/val pool to split into folds")
        info: tuple[np.ndarray | None, int, str] = self.fold_pool_info
        return info

    def data_checksum(self) -> str:
        """Checksum of every tensor the task loaded (after setup): changes when its data does."""
        from ncaflow.data import array_checksum

        arrays = [t.cpu().numpy() for name in sorted(self.splits) for t in self.splits[name]]
        return array_checksum(*arrays)

    # -- evaluation --------------------------------------------------------------

    @abstractmethod
    def evaluate(
        self, model: nn.Module, split: str, generator: torch.Generator
    ) -> dict[str, float]:
        """Metrics on ``split`` ("val" or "test"); keys are prefixed with the split."""

    def examples(self, split: str, n: int) -> Tensor:
        """(n, C, H, W) seed states of the first ``n`` samples of ``split`` (after setup)."""
        if split not in self.splits:
            raise ConfigError(f"task {self.name!r} has no split {split!r}")
        return self.seed_state(self.splits[split][0][:n], self.config.model.channels)

    def predict_batch(
        self, model: nn.Module, x: Tensor, generator: torch.Generator, labels: dict[str, Any]
    ) -> list[dict[str, Any]]:
        """``ncaflow predict`` on images x (B, C_in, H, W), one record per image: "labels"
        tasks give {"label", "name", "scores"}, "masks" tasks {"mask": (H, W) bool array}.
        labels: the saved label names (``meta.labels``, class index as text -> name)."""
        raise NotImplementedError(f"{self.name}: {self.predict_instead}")

    def pixel_map(self, out: Tensor) -> Tensor:
        """(B, C, H, W) states -> (B, K, H, W) per-pixel prediction (probabilities, RGBA...)."""
        m = self.config.model
        return out[:, m.input_channels : m.input_channels + m.output_channels]

    def preview(self, out: Tensor) -> Tensor:
        """(B, C, H, W) states -> (B, 3, H, W) images in [0, 1] for TensorBoard."""
        rgb = out[:, self.config.model.input_channels :][:, :3]
        return rgb.clamp(0, 1)

    def preview_key(self) -> list[tuple[str, tuple[float, float, float]]]:
        """The colours ``preview`` uses, as (label, RGB in [0, 1]) pairs: a GIF's key."""
        return []

    def meta(self) -> dict[str, Any]:
        """What ``load`` needs beyond the config to use the model (e.g. class names)."""
        return {}

    # -- resumable state ---------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        del state

    # -- shared helpers ------------------------------------------------------------

    @property
    def eval_steps(self) -> int:
        """Rollout length at evaluation: the longest training rollout."""
        return self.config.train.steps[-1]

    def seed_noise(self, state: Tensor, std: float, generator: torch.Generator) -> Tensor:
        """(B, C, H, W) seed states with N(0, std^2) noise added to the hidden channels
        (``data.seed_noise``), drawn from ``generator`` (on its device) so that a seeded run
        draws the same noise; std = 0 returns ``state`` itself and draws nothing."""
        if std == 0.0:
            return state
        m = self.config.model
        start = m.input_channels + m.output_channels
        b, _, h, w = state.shape
        shape = (b, m.hidden_channels, h, w)
        noise = torch.randn(shape, generator=generator, device=generator.device) * std
        noisy = state.clone()
        noisy[:, start:] += noise.to(device=state.device, dtype=state.dtype)
        return noisy

    @staticmethod
    def seed_state(image: Tensor, channels: int) -> Tensor:
        """(B, C_in, H, W) image -> (B, channels, H, W): the image, then zeros."""
        b, c_in, h, w = image.shape
        state = image.new_zeros(b, channels, h, w)
        state[:, :c_in] = image
        return state


def fill_model_keys(model: dict[str, Any], derived: dict[str, tuple[int, str]]) -> None:
    """Set each derived ``model.<name>`` the run config leaves out; one it gives must agree.

    derived: key -> (value, what decided it, as the error shows it)."""
    for key, (value, source) in derived.items():
        name = key.split(".", 1)[1]
        given = model.setdefault(name, value)
        if given != value or isinstance(given, bool):
            raise ConfigError(
                f"key '{key}': {given!r} contradicts {source}; set it to {value} or leave it out",
                key,
            )


def batches(n: int, size: int) -> list[slice]:
    """Contiguous slices covering range(n) in chunks of ``size``."""
    return [slice(i, min(i + size, n)) for i in range(0, n, size)]
