"""Resumable training checkpoints without pickle: one safetensors file.

A checkpoint is a nested structure of dicts, lists, tuples, numbers, strings and
tensors (model, optimiser and scheduler state dicts, RNG states, history). It is
written as ONE ``.safetensors`` file: every tensor under its path in the structure
(``model/conv.weight``, ``optimizer/state/0/exp_avg``), and the structure itself as
JSON in the file's metadata, with each tensor replaced by ``{"$tensor": path}``.
A SHA-256 over that JSON and over every tensor's name, dtype, shape and bytes is
stored beside it, so a truncated, damaged or edited file is refused, never used.

One file (not a tensor file plus a JSON file) keeps each write atomic: a run killed
while writing leaves the previous checkpoint whole. The file is streamed from the
tensors' memory and hashed on the way (about torch.save's speed plus the SHA-256:
0.63 s against 0.37 s for a 340 MB sample pool) and read with safetensors' parser.
Reading parses no pickle, so a file a user was handed cannot run code. Every problem
raises :class:`CheckpointError` with the one line ``<path>: damaged checkpoint (<why>);
delete it to start over``.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import sys
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from torch import Tensor

from ncaflow.guard.io import atomic_write

__all__ = [
    "FORMAT",
    "CheckpointError",
    "changed_keys",
    "damaged",
    "read_checkpoint",
    "write_checkpoint",
]

FORMAT = "ncaflow-checkpoint"
FORMAT_VERSION = 1


class CheckpointError(RuntimeError):
    """A checkpoint file cannot be used: damaged, truncated, edited, not ncaflow's."""


def damaged(path: Path, why: str) -> CheckpointError:
    """The one-line error for a checkpoint that must not be used."""
    return CheckpointError(f"{path}: damaged checkpoint ({why}); delete it to start over")


def _encode(obj: Any, path: str, tensors: dict[str, Tensor]) -> Any:
    """JSON-able form of ``obj``; tensors go into ``tensors`` under their path."""
    if isinstance(obj, Tensor):
        tensors[path] = obj.detach().cpu().contiguous()  # written as it is, no copy on CPU
        return {"$tensor": path}
    if isinstance(obj, tuple):
        return {"$tuple": [_encode(v, f"{path}/{i}", tensors) for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [_encode(v, f"{path}/{i}", tensors) for i, v in enumerate(obj)]
    if isinstance(obj, dict):
        if all(isinstance(k, str) and not k.startswith("$") for k in obj):
            return {k: _encode(v, f"{path}/{k}", tensors) for k, v in obj.items()}
        # int keys (optimizer state): a list of pairs keeps their type
        return {"$items": [[k, _encode(v, f"{path}/{k}", tensors)] for k, v in obj.items()]}
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"cannot store a {type(obj).__name__} in a checkpoint (at {path})")


def _decode(obj: Any, tensors: dict[str, Tensor]) -> Any:
    if isinstance(obj, list):
        return [_decode(v, tensors) for v in obj]
    if not isinstance(obj, dict):
        return obj
    if set(obj) == {"$tensor"}:
        return tensors[obj["$tensor"]]  # KeyError: a tensor named in the JSON is missing
    if set(obj) == {"$tuple"}:
        return tuple(_decode(v, tensors) for v in obj["$tuple"])
    if set(obj) == {"$items"}:
        return {k: _decode(v, tensors) for k, v in obj["$items"]}
    return {k: _decode(v, tensors) for k, v in obj.items()}


def _bytes(t: Tensor) -> Any:
    """A contiguous CPU tensor's bytes, as a buffer (no copy)."""
    return t.reshape(-1).view(torch.uint8).numpy()


def _order(tensors: dict[str, Tensor]) -> list[str]:
    """Where each tensor goes in the file, and in the hash: widest dtype first (so that
    every tensor's data stays aligned), then by name."""
    return sorted(tensors, key=lambda name: (-tensors[name].element_size(), name))


def _feed(h: Any, name: str, t: Tensor) -> None:
    h.update(f"\0{name}\0{t.dtype}\0{list(t.shape)}\0".encode())
    h.update(_bytes(t))


def _digest(state_json: str, tensors: dict[str, Tensor]) -> str:
    """SHA-256 over the JSON and every tensor's name, dtype, shape and bytes."""
    h = hashlib.sha256(state_json.encode())
    for name in _order(tensors):
        _feed(h, name, tensors[name].contiguous())
    return h.hexdigest()


# safetensors' names of the dtypes a training state holds
_DTYPES = {
    torch.float64: "F64",
    torch.float32: "F32",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.int64: "I64",
    torch.int32: "I32",
    torch.int16: "I16",
    torch.int8: "I8",
    torch.uint8: "U8",
    torch.bool: "BOOL",
}
_PLACEHOLDER = "0" * 64  # the SHA-256, filled in once the tensors are written


def _header(tensors: dict[str, Tensor], meta: dict[str, str]) -> bytes:
    """The safetensors header: JSON of every tensor's dtype, shape and byte range in the
    data that follows (in _order), padded to 8 bytes, after its length (u64, LE)."""
    doc: dict[str, Any] = {"__metadata__": meta}
    offset = 0
    for name in _order(tensors):
        t = tensors[name]
        if t.dtype not in _DTYPES:
            raise TypeError(f"cannot store a {t.dtype} tensor in a checkpoint ({name})")
        size = t.numel() * t.element_size()
        doc[name] = {
            "dtype": _DTYPES[t.dtype],
            "shape": list(t.shape),
            "data_offsets": [offset, offset + size],
        }
        offset += size
    raw = json.dumps(doc, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw


def write_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """Write ``state`` to ``path`` atomically, synced to disk.

    The safetensors file is streamed from the tensors' own memory, hashed on the way,
    and the SHA-256 written into its header last: one pass, no copy of the data (as
    fast as ``torch.save``; ``safetensors.torch.save`` copies it three times). It is
    read back with safetensors' own parser. OSError (disk full, read-only folder)
    propagates with nothing left behind.
    """
    if sys.byteorder != "little":
        raise RuntimeError("ncaflow writes checkpoints on little-endian machines only")
    tensors: dict[str, Tensor] = {}
    state_json = json.dumps(_encode(state, "", tensors), separators=(",", ":"))
    meta = {  # sha256 first: its placeholder is the first in the header
        "sha256": _PLACEHOLDER,
        "format": FORMAT,
        "format_version": str(FORMAT_VERSION),
        "state": state_json,
    }
    header = _header(tensors, meta)
    at = header.index(_PLACEHOLDER.encode())

    def write(tmp: Path) -> None:
        h = hashlib.sha256(state_json.encode())  # _digest, fed while writing
        with open(tmp, "wb") as f:
            f.write(header)
            for name in _order(tensors):
                _feed(h, name, tensors[name])
                f.write(_bytes(tensors[name]))
            f.seek(at)
            f.write(h.hexdigest().encode())
            f.flush()
            os.fsync(f.fileno())

    atomic_write(path, write)


def read_checkpoint(path: str | Path, required: tuple[str, ...] = ()) -> dict[str, Any]:
    """The state stored by :func:`write_checkpoint`, tensors on the CPU.

    Raises CheckpointError unless the file is whole, unedited, and holds every key
    in ``required``.
    """
    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {name: f.get_tensor(name) for name in f.keys()}  # noqa: SIM118
    except (SafetensorError, OSError, ValueError) as err:
        why = "empty file" if path.stat().st_size == 0 else f"unreadable: {err}"
        raise damaged(path, why) from None
    if meta.get("format") != FORMAT:
        raise damaged(path, f"not an ncaflow checkpoint, format={meta.get('format')!r}")
    if meta.get("format_version") != str(FORMAT_VERSION):
        raise damaged(path, f"format version {meta.get('format_version')!r}, this ncaflow reads 1")
    state_json = meta.get("state", "")
    if meta.get("sha256") != _digest(state_json, tensors):
        raise damaged(path, "SHA-256 mismatch: the file was changed after it was written")
    try:
        state = _decode(json.loads(state_json), tensors)
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
        raise damaged(path, f"cannot decode its state: {err!r}") from None
    if not isinstance(state, dict):
        raise damaged(path, "its state is not a mapping")
    missing = [key for key in required if key not in state]
    if missing:
        raise damaged(path, f"missing {', '.join(missing)}")
    return state


def _flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(obj, dict) and obj:
        out: dict[str, Any] = {}
        for k, v in obj.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: obj}


def changed_keys(
    old: dict[str, Any], new: dict[str, Any], *, ignore: frozenset[str] = frozenset()
) -> list[str]:
    """``['train.lr: 0.002 -> 0.001', ...]``: dotted keys whose value differs, minus
    ``ignore``; a key only one side has shows ``<unset>`` on the other."""
    a, b = _flatten(old), _flatten(new)
    unset = "<unset>"
    return [
        f"{key}: {a.get(key, unset)!r} -> {b.get(key, unset)!r}"
        for key in sorted(set(a) | set(b))
        if key not in ignore and a.get(key, unset) != b.get(key, unset)
    ]
