"""How a classifier's final state becomes class logits: one object per ``data.readout``.

- ``vote``: every pixel predicts class logits in the output channels; the image's
  score per class is the share of pixels voting for it (majority vote).
- ``head``: a linear head (``model.head``; an MLP with ``model.head_hidden``) on the
  spatially averaged hidden channels.

:class:`~ncaflow.tasks.classification.Classification` picks one by name from
``READOUTS`` once, when the config becomes the task; nothing else compares the names.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ncaflow.config import ModelConfig
from ncaflow.tasks.base import PALETTE

__all__ = ["READOUTS", "HeadReadout", "Readout", "VoteReadout", "readout_class"]

Require = Callable[[bool, str, str], None]  # Task.require: (ok, key, message)


class Readout(ABC):
    """One way to read class logits out of final states (B, C, H, W) of ``model``."""

    name: ClassVar[str]  # the data.readout value
    classes_key: ClassVar[str]  # the model key holding the class count

    def __init__(self, *, model: ModelConfig) -> None:
        self.model = model

    def configured_classes(self) -> int:
        """The class count the model config gives (``classes_key``)."""
        return int(getattr(self.model, self.classes_key.split(".", 1)[1]))

    def check_model(self, require: Require) -> None:
        """Refuse a model config this readout cannot read (beyond the class count)."""

    @abstractmethod
    def logits(self, net: nn.Module, out: Tensor, n_classes: int) -> Tensor:
        """Final states (B, C, H, W) -> per-pixel (B, K, H, W) or pooled (B, K) logits."""

    @abstractmethod
    def scores(self, logits: Tensor, n_classes: int, multilabel: bool) -> Tensor:
        """This readout's logits -> (B, K) per-class scores in [0, 1]."""

    @abstractmethod
    def pixel_map(self, out: Tensor, n_classes: int, multilabel: bool) -> Tensor:
        """Final states (B, C, H, W) -> (B, K, H, W) per-pixel picture of the prediction."""

    @abstractmethod
    def preview(self, out: Tensor, image: Tensor, n_classes: int) -> Tensor:
        """Final states (B, C, H, W) and the grey image (B, 1, H, W) -> (B, 3, H, W) RGB."""


class VoteReadout(Readout):
    name = "vote"
    classes_key = "model.output_channels"

    def logits(self, net: nn.Module, out: Tensor, n_classes: int) -> Tensor:
        c_in = self.model.input_channels
        return out[:, c_in : c_in + n_classes]  # (B, K, H, W)

    def scores(self, logits: Tensor, n_classes: int, multilabel: bool) -> Tensor:
        """Vote shares: per class the fraction of pixels voting for it (multi-label: the
        mean per-pixel probability)."""
        if multilabel:
            return torch.sigmoid(logits).mean(dim=(2, 3))
        votes = F.one_hot(logits.argmax(1), n_classes).float()  # (B, H, W, K)
        return votes.mean(dim=(1, 2))

    def pixel_map(self, out: Tensor, n_classes: int, multilabel: bool) -> Tensor:
        """Per-pixel class probabilities."""
        logits = self.logits(nn.Identity(), out, n_classes)
        return torch.sigmoid(logits) if multilabel else torch.softmax(logits, 1)

    def preview(self, out: Tensor, image: Tensor, n_classes: int) -> Tensor:
        """The image tinted by each pixel's vote."""
        palette = torch.tensor(PALETTE, device=out.device)
        votes = self.logits(nn.Identity(), out, n_classes).argmax(1)  # (B, H, W)
        colour = palette[votes % len(PALETTE)].permute(0, 3, 1, 2)  # (B, 3, H, W)
        return 0.5 * image + 0.5 * colour


class HeadReadout(Readout):
    name = "head"
    classes_key = "model.head"

    def check_model(self, require: Require) -> None:
        ok = self.model.hidden_channels > 0
        require(ok, "model.hidden_channels", "the head reads hidden channels")

    def hidden(self, out: Tensor) -> Tensor:
        """(B, C, H, W) -> (B, hidden, H, W): the hidden channels the head reads."""
        return out[:, self.model.input_channels + self.model.output_channels :]

    def logits(self, net: nn.Module, out: Tensor, n_classes: int) -> Tensor:
        logits: Tensor = net.head(self.hidden(out).mean(dim=(2, 3)))  # type: ignore[operator]
        return logits  # (B, K)

    def scores(self, logits: Tensor, n_classes: int, multilabel: bool) -> Tensor:
        """Class probabilities (sigmoid per class for multi-label, else softmax)."""
        return torch.sigmoid(logits) if multilabel else torch.softmax(logits, 1)

    def pixel_map(self, out: Tensor, n_classes: int, multilabel: bool) -> Tensor:
        """The hidden state's mean per pixel (B, 1, H, W): the head has no per-pixel answer."""
        return self.hidden(out).mean(1, keepdim=True)

    def preview(self, out: Tensor, image: Tensor, n_classes: int) -> Tensor:
        return image.expand(-1, 3, -1, -1)


READOUTS: dict[str, type[Readout]] = {r.name: r for r in (VoteReadout, HeadReadout)}


def readout_class(name: object) -> type[Readout]:
    """The readout registered as ``name``; the default (vote) for a value that is none, so
    that the config check (:func:`ncaflow.config.from_dict`) names the bad key."""
    return READOUTS.get(name, VoteReadout) if isinstance(name, str) else VoteReadout
