"""Checkpoints without pickle (round trip, damage refused) and the output-folder lock."""

from __future__ import annotations

import errno
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from ncaflow.training import checkpoint
from ncaflow.training.checkpoint import (
    CheckpointError,
    changed_keys,
    read_checkpoint,
    write_checkpoint,
)
from ncaflow.training.lock import LOCK, FolderLocked, folder_lock


def _state() -> dict[str, Any]:
    """What a training checkpoint holds, in miniature: int keys, tuples, NaN, 0-d tensors."""
    return {
        "optimizer": {
            "state": {0: {"step": torch.tensor(3.0), "exp_avg": torch.randn(2, 3)}},
            "param_groups": [{"lr": 1e-3, "betas": (0.9, 0.999), "params": [0], "foreach": None}],
        },
        "best": math.nan,
        "history": [{"iteration": 2.0, "val_loss": 0.25}],
        "pool": torch.arange(6, dtype=torch.uint8).reshape(2, 3),
        "half": torch.ones(2, dtype=torch.bfloat16),
        "$odd": {"$tensor": "a user key that looks like a tag"},
    }


def test_round_trip_keeps_types_and_values(tmp_path: Path) -> None:
    path = tmp_path / "c.safetensors"
    state = _state()
    write_checkpoint(path, state)
    back = read_checkpoint(path, required=("best", "history"))
    opt = back["optimizer"]
    assert list(opt["state"]) == [0]  # int key, not "0"
    assert torch.equal(opt["state"][0]["exp_avg"], state["optimizer"]["state"][0]["exp_avg"])
    assert opt["state"][0]["step"].shape == ()
    assert opt["param_groups"][0]["betas"] == (0.9, 0.999)
    assert math.isnan(back["best"]) and back["history"] == state["history"]
    assert back["half"].dtype == torch.bfloat16 and torch.equal(back["pool"], state["pool"])
    assert back["$odd"] == state["$odd"]


def test_views_aliases_and_mixed_dtypes_round_trip(tmp_path: Path) -> None:
    """Tensors are streamed from their own memory: views, shared and transposed tensors,
    and 1-byte dtypes beside 8-byte ones (safetensors parses the result)."""
    pool, w = torch.rand(10, 3, 4), torch.randn(3, 3)
    state = {
        "pool": pool,
        "view": pool[2:4],
        "w": w,
        "alias": w,
        "t": w.t(),
        "flags": torch.tensor([True, False, True]),
        "bytes": torch.arange(3, dtype=torch.uint8),
        "f64": torch.randn(2, dtype=torch.float64),
        "i64": torch.tensor(7),
        "empty": torch.zeros(0, 3),
    }
    write_checkpoint(tmp_path / "c.safetensors", state)
    back = read_checkpoint(tmp_path / "c.safetensors")
    for key, value in state.items():
        assert back[key].dtype == value.dtype and torch.equal(back[key], value), key


def _flip_last_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    path.write_bytes(bytes(data))


def _edit_json(path: Path) -> None:
    data = path.read_bytes().replace(b"0.25", b"0.24")  # a history value, in the header
    path.write_bytes(data)


@pytest.mark.parametrize(
    ("damage", "why"),
    [
        (lambda p: p.write_bytes(b""), "empty file"),
        (lambda p: p.write_bytes(p.read_bytes()[:-5]), "unreadable"),
        (lambda p: p.write_bytes(p.read_bytes()[:20]), "unreadable"),
        (_flip_last_byte, "SHA-256 mismatch"),
        (_edit_json, "SHA-256 mismatch"),
    ],
    ids=["empty", "truncated-tail", "truncated-header", "tensor-byte", "json-edit"],
)
def test_damage_is_refused_in_one_line(tmp_path: Path, damage: Any, why: str) -> None:
    path = tmp_path / "c.safetensors"
    write_checkpoint(path, _state())
    damage(path)
    with pytest.raises(CheckpointError) as err:
        read_checkpoint(path)
    message = str(err.value)
    assert message.startswith(f"{path}: damaged checkpoint (") and why in message
    assert message.endswith("; delete it to start over") and "\n" not in message


def test_missing_keys_and_foreign_files_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "c.safetensors"
    write_checkpoint(path, {"iteration": 3})
    with pytest.raises(CheckpointError, match=r"\(missing best, history\)"):
        read_checkpoint(path, required=("iteration", "best", "history"))
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, str(path))  # a model's weights, not a checkpoint
    with pytest.raises(CheckpointError, match="not an ncaflow checkpoint"):
        read_checkpoint(path)


def test_a_failed_write_keeps_the_previous_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "c.safetensors"
    write_checkpoint(path, {"iteration": 2})

    def full(*args: Any, **kwargs: Any) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint.os, "fsync", full)
    with pytest.raises(OSError, match="No space"):
        write_checkpoint(path, {"iteration": 4})
    assert read_checkpoint(path)["iteration"] == 2
    assert [p.name for p in tmp_path.iterdir()] == ["c.safetensors"]  # no temp file left


def test_changed_keys() -> None:
    old = {"train": {"lr": 0.002, "threads": None, "steps": [4, 6]}, "name": "a"}
    new = {"train": {"lr": 0.001, "threads": 2, "steps": [4, 6]}, "name": "a", "extra": 1}
    assert changed_keys(old, new, ignore=frozenset({"train.threads"})) == [
        "extra: '<unset>' -> 1",
        "train.lr: 0.002 -> 0.001",
    ]


def test_lock_refuses_a_second_holder_and_is_released(tmp_path: Path) -> None:
    with folder_lock(tmp_path) as path:
        assert path.read_text() == f"{os.getpid()}\n"
        with pytest.raises(FolderLocked) as err, folder_lock(tmp_path):
            pass
        assert str(err.value) == (
            f"another ncaflow train is writing to {tmp_path} (pid {os.getpid()}); "
            "wait for it or use another --out"
        )
    assert not (tmp_path / LOCK).exists()
    with folder_lock(tmp_path):  # free again
        pass


def test_a_lock_file_left_by_a_killed_process_blocks_nobody(tmp_path: Path) -> None:
    code = (
        "import os, sys; from ncaflow.training.lock import folder_lock; "
        "lock = folder_lock(sys.argv[1]); lock.__enter__(); os._exit(9)"  # dies holding it
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2] / "src")}
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path)], env=env, check=False)
    assert done.returncode == 9 and (tmp_path / LOCK).exists()
    with folder_lock(tmp_path):
        pass


def test_lock_held_by_another_process(tmp_path: Path) -> None:
    code = (
        "import sys, time; from ncaflow.training.lock import folder_lock\n"
        "with folder_lock(sys.argv[1]):\n    print('locked', flush=True); time.sleep(60)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2] / "src")}
    holder = subprocess.Popen(
        [sys.executable, "-c", code, str(tmp_path)], env=env, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
        with pytest.raises(FolderLocked, match=f"pid {holder.pid}"), folder_lock(tmp_path):
            pass
    finally:
        holder.kill()
        holder.wait()
    with folder_lock(tmp_path):
        pass
