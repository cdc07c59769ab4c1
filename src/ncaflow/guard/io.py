"""Saving and loading: a model is ``model.safetensors`` + ``model.json``; writes are atomic.

The JSON holds the complete, versioned run config plus task metadata, the
SHA-256 of the weights file and (format version 2) a ``digest``: the SHA-256 of
the JSON's own canonical form without the digest. Since that form includes the
weights' SHA-256, the digest covers both files: editing the JSON (say its
``data.root``) or swapping the weights is noticed. It is a checksum against
damage and accidental edits, not a signature: whoever can write both files can
recompute it.

:func:`verify` runs every check :func:`load` relies on (digest, SHA-256, config,
tensor names and shapes against the model the config builds, finite values)
and :func:`load` calls it, so ``ncaflow check`` and ``load`` accept the same
files. Version-1 files (no digest; the repository's reference and DVC-tracked
models) are still read, with their ``weights_sha256`` required.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from ncaflow.config import (
    MAX_SIDE,
    ConfigError,
    RunConfig,
    check_ranges,
    from_dict,
    short,
    to_dict,
)
from ncaflow.model.cascade import build_model
from ncaflow.runtime.safe_io import atomic_write

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "READS_VERSION_1",
    "ModelFileError",
    "Verified",
    "atomic_write",
    "config_of",
    "json_digest",
    "load",
    "load_config_of",
    "model_paths",
    "save",
    "sha256",
    "upgrade",
    "verify",
]

FORMAT = "ncaflow-model"
FORMAT_VERSION = 2  # 2: the JSON carries `digest`; 1: weights_sha256 only
# Version-1 files are still read (the repository's reference and DVC-tracked models are
# version 1). Their JSON has no digest, so an edited file that claims version 1 passes;
# once every model has been rewritten by upgrade() (`ncaflow check --upgrade`), set False.
# Version-1 files (no digest) are read only by `upgrade` (`ncaflow check --upgrade`), so that
# an edited JSON cannot skip the digest by claiming version 1.
READS_VERSION_1 = False
RESAVE = "restore both files together from their source (`dvc pull`, the download) or retrain"


class ModelFileError(RuntimeError):
    """A model file is missing, damaged, edited or does not match its JSON or config."""


@dataclass(frozen=True)
class Verified:
    """What :func:`verify` read and checked: the config, the metadata and the tensors."""

    config: RunConfig
    meta: dict[str, Any]
    state: dict[str, Tensor]
    format_version: int


def sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def json_digest(doc: dict[str, Any]) -> str:
    """SHA-256 of ``doc`` without its ``digest`` key, as sorted, compact, ASCII JSON."""
    body = {k: v for k, v in doc.items() if k != "digest"}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode()).hexdigest()


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
    """Write weights and config atomically (weights first); returns the weights path."""
    weights, meta_path = model_paths(path)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    atomic_write(weights, lambda tmp: save_file(tensors, str(tmp)))
    doc: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "config": to_dict(config),
        "meta": meta or {},
        "parameters": sum(p.numel() for p in model.parameters()),
        "weights_sha256": sha256(weights),
    }
    _write_json(meta_path, doc)
    return weights


def _write_json(meta_path: Path, doc: dict[str, Any]) -> None:
    """Write ``doc`` with its digest, atomically."""
    doc = json.loads(json.dumps(doc))  # the digest is over what a reader will parse
    doc["digest"] = json_digest(doc)
    atomic_write(meta_path, lambda tmp: tmp.write_text(json.dumps(doc, indent=2) + "\n"))


def upgrade(path: str | Path) -> bool:
    """Rewrite a version-1 model's JSON as the current version (digest added; the weights
    and every other value unchanged) after the full :func:`verify`. True if rewritten."""
    _, meta_path = model_paths(path)
    if verify(path, legacy=True).format_version == FORMAT_VERSION:
        return False
    doc = json.loads(meta_path.read_text(encoding="utf-8"))
    doc["format_version"] = FORMAT_VERSION
    _write_json(meta_path, doc)
    verify(path)
    return True


def _read_json(meta_path: Path, *, legacy: bool = False) -> dict[str, Any]:
    """The model JSON, checked for format, version and (version 2) its digest; ``legacy``
    reads version 1 (no digest) too, as :func:`upgrade` must."""
    if not meta_path.is_file():
        raise ModelFileError(
            f"{meta_path}: missing; a model needs its .json next to the .safetensors"
        )
    try:
        doc = json.loads(meta_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ModelFileError(f"{meta_path}: not valid JSON ({err}); {RESAVE}") from None
    except RecursionError:
        raise ModelFileError(
            f"{meta_path}: nested too deeply to be a model file (not what ncaflow writes); {RESAVE}"
        ) from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        found = doc.get("format") if isinstance(doc, dict) else type(doc).__name__
        raise ModelFileError(
            f"{meta_path}: key 'format': not an ncaflow model file (found {found!r}, "
            f"expected {FORMAT!r}); pass the model.json written by `ncaflow train`"
        )
    version = doc.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ModelFileError(
            f"{meta_path}: key 'format_version': {version!r} is not a format version; {RESAVE}"
        )
    if version > FORMAT_VERSION:
        raise ModelFileError(
            f"{meta_path}: key 'format_version': {version} was written by a newer ncaflow "
            f"(this one reads 1..{FORMAT_VERSION}); upgrade ncaflow to read it"
        )
    if version == 1 and not (READS_VERSION_1 or legacy):
        raise ModelFileError(
            f"{meta_path}: key 'format_version': 1 (no digest) is no longer read; rewrite it "
            "with an ncaflow that reads it: `ncaflow check --upgrade FOLDER`"
        )
    if not isinstance(doc.get("weights_sha256"), str):
        raise ModelFileError(
            f"{meta_path}: key 'weights_sha256': missing, so the weights cannot be checked; "
            f"{RESAVE}"
        )
    if version >= 2:
        if not isinstance(doc.get("digest"), str):
            raise ModelFileError(
                f"{meta_path}: key 'digest': missing, so the file cannot be checked; {RESAVE}"
            )
        if doc["digest"] != json_digest(doc):
            raise ModelFileError(
                f"{meta_path}: key 'digest': does not match the file's content (the JSON was "
                f"edited or damaged); {RESAVE}"
            )
    return doc


def _config(doc: dict[str, Any], meta_path: Path) -> tuple[RunConfig, dict[str, Any]]:
    from ncaflow.tasks import get_task

    meta = doc.get("meta", {})
    if not isinstance(meta, dict):
        raise ModelFileError(f"{meta_path}: key 'meta': expected a mapping; {RESAVE}")
    try:
        config = from_dict(RunConfig, doc.get("config"), "config")
        config.validate()
        check_ranges(get_task(config.task).data_config(config.data), "data")  # data sizes too
    except ConfigError as err:
        raise ModelFileError(f"{meta_path}: {err}; {RESAVE}") from None
    _check_grid(config, meta, meta_path)
    return config, meta


def _check_grid(config: RunConfig, meta: dict[str, Any], meta_path: Path) -> None:
    """The grid the file's sizes give (``meta.target_shape``, ``meta.size``, ``data.size``)
    is checked before anything of that size is allocated."""
    from ncaflow.tasks import get_task

    try:
        size = get_task(config.task).grid_size(dict(config.data), meta)
        ok = size is None or all(1 <= int(side) <= MAX_SIDE for side in size)
    except (TypeError, ValueError, OverflowError):
        ok = False
    if not ok:
        shown = {k: short(meta[k]) for k in ("target_shape", "size") if k in meta}
        raise ModelFileError(
            f"{meta_path}: key 'meta': the grid size it gives ({shown or 'data.size'}) is not "
            f"1..{MAX_SIDE} cells a side; {RESAVE}"
        )


def load_config_of(path: str | Path) -> tuple[RunConfig, dict[str, Any]]:
    """The run config and metadata stored with a saved model (JSON checks only)."""
    _, meta_path = model_paths(path)
    return _config(_read_json(meta_path), meta_path)


def _check_tensors(state: dict[str, Tensor], config: RunConfig, weights: Path) -> None:
    """Names, shapes and dtypes equal those of the model ``config`` builds; all finite."""
    expected = build_model(config).state_dict()
    unknown = sorted(set(state) - set(expected))
    missing = sorted(set(expected) - set(state))
    if unknown or missing:
        what = f"unknown tensor {unknown[0]!r}" if unknown else f"missing tensor {missing[0]!r}"
        raise ModelFileError(
            f"{weights}: {what} ({len(unknown)} unknown, {len(missing)} missing for the "
            f"config in its .json); {RESAVE}"
        )
    for name, want in expected.items():
        got = state[name]
        if got.shape != want.shape or got.dtype != want.dtype:
            raise ModelFileError(
                f"{weights}: tensor {name!r} is {got.dtype} {tuple(got.shape)}, the config in "
                f"its .json builds {want.dtype} {tuple(want.shape)}; {RESAVE}"
            )
        if got.is_floating_point() and not bool(torch.isfinite(got).all()):
            raise ModelFileError(
                f"{weights}: tensor {name!r} holds NaN or Inf values (training diverged or "
                f"the file is damaged); retrain with a lower train.lr or {RESAVE}"
            )


def verify(path: str | Path, *, legacy: bool = False) -> Verified:
    """Every check :func:`load` relies on; raises ModelFileError naming the file and why.

    JSON: format, version, digest (v2), a valid config. Weights: present, SHA-256 as
    recorded, readable safetensors, exactly the tensors (names, shapes, dtypes) of the
    model the config builds, all finite. Returns what was read, on the CPU.
    """
    weights, meta_path = model_paths(path)
    if not weights.exists() and not meta_path.exists():
        raise ModelFileError(
            f"{path}: no such model (neither {weights.name} nor {meta_path.name} is there); "
            "pass a model folder, its .safetensors or its .json"
        )
    doc = _read_json(meta_path, legacy=legacy)
    config, meta = _config(doc, meta_path)
    if not weights.is_file():
        raise ModelFileError(f"{weights}: missing; run `dvc pull` or retrain this model")
    if sha256(weights) != doc["weights_sha256"]:
        raise ModelFileError(
            f"{weights}: does not match {meta_path.name} (SHA-256 differs): the file is "
            f"truncated or from another run; {RESAVE}"
        )
    try:
        state = load_file(str(weights), device="cpu")
    except (SafetensorError, OSError) as err:
        raise ModelFileError(f"{weights}: cannot read weights ({err}); {RESAVE}") from None
    _check_tensors(state, config, weights)
    return Verified(config, meta, state, doc["format_version"])


def load(path: str | Path, device: str | torch.device = "cpu") -> nn.Module:
    """Rebuild a saved model from its two files. ``config_of(model)`` gives its RunConfig."""
    checked = verify(path)
    model = build_model(checked.config)
    model.load_state_dict(checked.state)  # verify() checked names and shapes
    model.run_config = checked.config  # type: ignore[assignment]
    model.meta = checked.meta  # type: ignore[assignment]
    return model.to(device).eval()


def config_of(model: nn.Module) -> RunConfig:
    """The RunConfig that :func:`load` attached to a model."""
    config = getattr(model, "run_config", None)
    if not isinstance(config, RunConfig):
        raise ValueError("this model carries no run config: load it with ncaflow.load(path)")
    return config
