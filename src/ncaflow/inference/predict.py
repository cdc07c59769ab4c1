"""Predict with a saved model on image files: a class per image, or a mask per image.

Classification models give each image's class and per-class scores exactly as
``evaluate`` computes them (same rollouts, views and readout; the task module's
code). Segmentation models give a binary mask (``logit > 0``, as ``evaluate``
thresholds it), written as a PNG per image. Growing and self-classification
models read no image of the user's, so they are refused with a pointer to the
command that fits them.

Images are read with Pillow, converted to the model's channels (grey or RGB)
and scaled to [0, 1] like the training data; an image of another size is
resized (bilinear, as the data loaders do) with a warning, or refused with
``resize=False``. Nothing is downloaded and only ``out`` is written.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn

from ncaflow.data.images import check_finite, image_array
from ncaflow.guard.io import atomic_write, config_of, load
from ncaflow.tasks import TASKS, get_task
from ncaflow.tasks.base import Task, batches

__all__ = ["PredictWarning", "Prediction", "predict", "read_image"]


class PredictWarning(UserWarning):
    """An image was resized to the model's size."""


@dataclass
class Prediction:
    """One image's result.

    Classification: ``label`` (class index; for multi-label the classes scoring > 0.5),
    ``name`` (its label text) and ``scores`` (K,) per-class scores in [0, 1].
    Segmentation: ``mask`` (H, W) bool at the image's own size, ``mask_path`` once written.
    """

    image: Path
    size: tuple[int, int]  # the image's (width, height)
    label: int | list[int] | None = None
    name: str | list[str] | None = None
    scores: list[float] = field(default_factory=list)
    mask: np.ndarray | None = None
    mask_path: Path | None = None

    def row(self) -> dict[str, Any]:
        """A flat record for CSV/JSON output."""
        out: dict[str, Any] = {"image": str(self.image)}
        if self.mask_path is not None or self.mask is not None:
            out["mask"] = str(self.mask_path) if self.mask_path else None
            out["foreground"] = round(float(self.mask.mean()), 6) if self.mask is not None else None
            return out
        out["label"] = self.label
        out["name"] = self.name
        out.update({f"score_{k}": round(s, 6) for k, s in enumerate(self.scores)})
        return out


def read_image(
    path: str | Path, *, channels: int, size: int | tuple[int, int], resize: bool = True
) -> tuple[Tensor, tuple[int, int]]:
    """One image file -> ((channels, size, size) float32 in [0, 1], its own (width, height)).

    Raises ValueError naming the file when it is missing, not an image, damaged, or
    (``resize=False``) of another size than ``size`` x ``size``.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such image file; check the path")
    if channels not in (1, 3, 4):
        raise ValueError(
            f"{path}: the model reads {channels}-channel images; predict needs a grey (1), "
            "RGB (3) or RGBA (4) model"
        )
    try:
        with Image.open(path) as im:
            im.load()  # decode now, so a truncated file fails here
            img = im.copy() if im.mode != "P" else im.convert("RGBA")
    except (OSError, Image.DecompressionBombError, SyntaxError) as err:
        raise ValueError(
            f"{path}: cannot read as an image ({err}); pass a PNG or JPEG file"
        ) from None
    check_finite(img, path)  # NaN pixels would give scores nan with a label 0
    own = img.size
    h, w = size if isinstance(size, tuple) else (size, size)
    if own != (w, h):
        if not resize:
            raise ValueError(
                f"{path}: {own[0]}x{own[1]} pixels, the model reads {w}x{h}; "
                "resize it or allow resizing (drop --no-resize)"
            )
        warnings.warn(
            f"{path}: resized from {own[0]}x{own[1]} to the model's {w}x{h}",
            PredictWarning,
            stacklevel=2,
        )
    arr = image_array(img, channels=channels, size=(h, w))  # as the training data is read
    return torch.from_numpy(np.ascontiguousarray(arr)), own  # (C, size, size)


def _task_for(model: nn.Module, device: str) -> Task:
    config = config_of(model)
    kind = get_task(config.task)
    if kind.predicts is None:
        able = sorted(name for name in TASKS if get_task(name).predicts is not None)
        raise ValueError(
            f"key 'task': predict reads images for {' and '.join(able)} models; "
            f"this model's task is {config.task!r}: {kind.predict_instead}"
        )
    task = kind(config=config, device=device)
    task.describe()  # class count and label kind, without reading the data set
    return task


def predict(
    model: str | Path | nn.Module,
    images: Sequence[str | Path],
    *,
    out: str | Path | None = None,
    resize: bool = True,
    seed: int = 0,
    device: str = "cpu",
    batch: int | None = None,
) -> list[Prediction]:
    """Predictions of a saved model (path or loaded) for image files, in their order.

    ``out``: a folder for segmentation masks (``<image stem>.png``, 0/255, at the
    image's own size); segmentation needs it, classification refuses it (the caller
    writes the table: ``Prediction.row()``). The fire
    masks come from one generator seeded by ``seed`` and drawn batch by batch, so
    results of a stochastic model depend on ``seed`` and ``batch`` (default: the task's
    ``data.eval_batch``, so the images of an evaluation split, in its order, get the
    scores ``evaluate`` computed for them).
    """
    if isinstance(model, str | Path):
        model = load(model, device=device)
    task = _task_for(model, device)
    config = config_of(model)
    assert task.predicts is not None  # _task_for refused the others
    into_folder = task.predicts.into_folder
    if into_folder and out is None:
        raise ValueError(
            f"--out: a {config.task} model writes {task.predicts.name}; give an --out folder"
        )
    if not into_folder and out is not None:
        raise ValueError(
            f"{out}: a {config.task} model writes a table, not masks; give a .csv or .json "
            "file as --out, or none to print it"
        )
    if not images:
        raise ValueError("predict: no images given; pass one or more image files")
    stems = [Path(image).stem for image in images]
    if out is not None and len(set(stems)) < len(stems):
        dup = next(s for s in stems if stems.count(s) > 1)
        raise ValueError(
            f"{out}: two images are named {dup!r}, and their masks would overwrite each "
            "other; predict them into separate --out folders"
        )
    if out is not None:
        inputs = {Path(image).resolve() for image in images}
        clash = next((s for s in stems if (Path(out) / f"{s}.png").resolve() in inputs), None)
        if clash is not None:
            raise ValueError(
                f"{Path(out) / (clash + '.png')}: the mask would overwrite that input image; "
                "give another --out folder"
            )
    size = task.data.size  # own data may give [H, W]
    size = (int(size[0]), int(size[-1])) if isinstance(size, list | tuple) else int(size)
    x, shapes = [], []
    for path in images:
        image, own = read_image(
            path, channels=config.model.input_channels, size=size, resize=resize
        )
        x.append(image)
        shapes.append(own)
    gen = torch.Generator(device=device).manual_seed(seed)
    labels = getattr(model, "meta", {}).get("labels", {})
    results = []
    with torch.no_grad():
        for s in batches(len(x), batch or task.data.eval_batch):
            chunk = torch.stack(x[s]).to(device)  # (B, C_in, S, S)
            records = task.predict_batch(model, chunk, gen, labels)
            for path, own, record in zip(images[s], shapes[s], records, strict=True):
                results.append(_prediction(Path(path), own, record, into_folder))
    if out is not None and into_folder:
        _write_masks(results, Path(out))
    return results


def _prediction(
    path: Path, own: tuple[int, int], record: dict[str, Any], into_folder: bool
) -> Prediction:
    """A task's record for one image as a Prediction: a table row (label, name, scores), or,
    for a task whose predictions go into a folder, its mask scaled to the image's size."""
    if not into_folder:
        return Prediction(path, own, record["label"], record["name"], record["scores"])
    img = Image.fromarray(record["mask"].astype(np.uint8) * 255)
    if img.size != own:
        img = img.resize(own, Image.Resampling.NEAREST)
    return Prediction(path, own, mask=np.asarray(img) > 127)


def _write_masks(results: list[Prediction], out: Path) -> None:
    """One PNG per result, all or none: a failure removes the masks this call wrote."""
    written: list[Path] = []
    try:
        for r in results:
            assert r.mask is not None
            target = out / f"{r.image.stem}.png"
            atomic_write(target, _png_writer(r.mask))
            written.append(target)
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)
        raise
    for r, path in zip(results, written, strict=True):
        r.mask_path = path


def _png_writer(mask: np.ndarray) -> Callable[[Path], None]:
    """A writer for atomic_write: the (H, W) bool mask as a 0/255 grey PNG."""
    img = Image.fromarray(mask.astype(np.uint8) * 255)
    return lambda tmp: img.save(tmp, format="PNG")
