"""Saving and loading: a model is ``model.safetensors`` + ``model.json``; writes are atomic.

The JSON holds the complete, versioned run config plus task metadata and the
SHA-256 of the weights file, so ``load(path)`` needs nothing else and notices
a weights file that does not belong to its JSON.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from ncaflow.cascade import build_model
from ncaflow.config import ConfigError, RunConfig, from_dict, to_dict

__all__ = [
    "FORMAT",
    "ModelFileError",
    "atomic_write",
    "config_of",
    "load",
    "load_config_of",
    "model_paths",
    "save",
    "sha256",
    "verify",
]

FORMAT = "ncaflow-model"
FORMAT_VERSION = 1


class ModelFileError(RuntimeError):
    """A model file is missing, truncated or does not match its JSON."""


def atomic_write(path: str | Path, write: Callable[[Path], object]) -> None:
    """Call ``write(tmp)`` on a temp file next to ``path``, then rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def model_paths(path: str | Path) -> tuple[Path, Path]:
    """``(weights, json)`` for a model directory, ``.safetensors`` or ``.json`` path."""
    path = Path(path)
    if path.is_dir() or not path.suffix:
        path = path / "model.safetensors"
    stem = path.with_suffix("")
    return stem.with_suffix(".safetensors"), stem.with_suffix(".json")


def save(
    model: nn.Module, config: RunConfig, path: str | Path, meta: dict[str, Any] | None = None
) -> Path:
    """Write weights and config atomically; returns the weights path."""
    weights, meta_path = model_paths(path)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    atomic_write(weights, lambda tmp: save_file(tensors, str(tmp)))
    doc = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "config": to_dict(config),
        "meta": meta or {},
        "parameters": sum(p.numel() for p in model.parameters()),
        "weights_sha256": sha256(weights),
    }
    atomic_write(meta_path, lambda tmp: tmp.write_text(json.dumps(doc, indent=2) + "\n"))
    return weights


def _read_json(meta_path: Path) -> dict[str, Any]:
    if not meta_path.exists():
        raise ModelFileError(
            f"{meta_path}: missing; a model needs its .json next to the .safetensors"
        )
    try:
        doc: dict[str, Any] = json.loads(meta_path.read_text())
    except json.JSONDecodeError as err:
        raise ModelFileError(f"{meta_path}: not valid JSON ({err}); the file is damaged") from None
    if doc.get("format") != FORMAT:
        raise ModelFileError(
            f"{meta_path}: not an ncaflow model file (format={doc.get('format')!r})"
        )
    if doc.get("format_version", 0) > FORMAT_VERSION:
        raise ModelFileError(f"{meta_path}: written by a newer ncaflow; upgrade ncaflow to read it")
    return doc


def load_config_of(path: str | Path) -> tuple[RunConfig, dict[str, Any]]:
    """The run config and metadata stored with a saved model."""
    _, meta_path = model_paths(path)
    doc = _read_json(meta_path)
    try:
        config = from_dict(RunConfig, doc["config"])
    except ConfigError as err:
        raise ModelFileError(f"{meta_path}: {err}") from None
    return config, doc.get("meta", {})


def verify(path: str | Path) -> None:
    """Raise ModelFileError unless the weights file matches the SHA-256 in its JSON."""
    weights, meta_path = model_paths(path)
    expected = _read_json(meta_path).get("weights_sha256")
    if not weights.exists():
        raise ModelFileError(f"{weights}: missing; run `dvc pull` or retrain this model")
    if expected and sha256(weights) != expected:
        raise ModelFileError(
            f"{weights}: does not match {meta_path.name} (SHA-256 differs); "
            "the file is truncated or from another run: restore both files together"
        )


def load(path: str | Path, device: str | torch.device = "cpu") -> nn.Module:
    """Rebuild a saved model from its two files. ``config_of(model)`` gives its RunConfig."""
    weights, meta_path = model_paths(path)
    config, meta = load_config_of(path)
    verify(path)
    try:
        state = load_file(str(weights), device=str(device))
    except (SafetensorError, OSError) as err:
        raise ModelFileError(f"{weights}: cannot read weights ({err})") from None
    model = build_model(config)
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise ModelFileError(
            f"{weights}: weights do not fit the config in {meta_path.name}: {err}"
        ) from None
    model.run_config = config  # type: ignore[assignment]
    model.meta = meta  # type: ignore[assignment]
    return model.to(device).eval()


def config_of(model: nn.Module) -> RunConfig:
    """The RunConfig that :func:`load` attached to a model."""
    config = getattr(model, "run_config", None)
    if not isinstance(config, RunConfig):
        raise ValueError("this model carries no run config: load it with ncaflow.load(path)")
    return config
