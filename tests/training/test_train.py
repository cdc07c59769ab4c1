"""The training engine: outputs, resume bit-identity, NaN stop, early stopping, fine-tuning."""

from __future__ import annotations

import dataclasses
import os
import signal
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from helpers import digits_config
from safetensors.torch import load_file

import ncaflow.training.train as train_module
from ncaflow.config import ConfigError, RunConfig, from_dict
from ncaflow.guard.io import load, save
from ncaflow.tasks import get_task
from ncaflow.tasks.selfclass import SelfClassification
from ncaflow.training.checkpoint import read_checkpoint, write_checkpoint
from ncaflow.training.lock import FolderLocked, folder_lock
from ncaflow.training.train import CHECKPOINT, TrainingError, TrainingInterrupted, train


class Crash(Exception):
    pass


def test_outputs_and_tensorboard(tmp_path: Path) -> None:
    result = train(digits_config(log_images_every=2), tmp_path)
    names = {p.name for p in tmp_path.iterdir()}
    assert {
        "model.safetensors",
        "model.json",
        "last.safetensors",
        "history.csv",
        "tensorboard",
    } <= names
    assert not {CHECKPOINT, "checkpoint.pt", "train.lock"} & names
    assert [r["iteration"] for r in result.history] == [2.0, 4.0, 6.0]
    events = list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    assert events and events[0].stat().st_size > 0
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tmp_path / "tensorboard")).Reload()
    assert {"train/loss", "val/loss", "val/acc"} <= set(acc.Tags()["scalars"])
    assert "train/final_state" in acc.Tags()["images"]


@pytest.mark.parametrize("crash_at", [1, 3, 5])
def test_resume_is_bit_identical(tmp_path: Path, crash_at: int) -> None:
    cfg = digits_config(iterations=6, checkpoint_every=2)
    train(cfg, tmp_path / "straight")

    def crash(it: int) -> None:
        if it == crash_at:
            raise Crash

    with pytest.raises(Crash):
        train(cfg, tmp_path / "resumed", on_iteration=crash)
    assert not (tmp_path / "resumed" / "model.safetensors").exists()  # nothing looks finished
    train(cfg, tmp_path / "resumed")
    for name in ("model.safetensors", "last.safetensors"):
        a = load_file(str(tmp_path / "straight" / name))
        b = load_file(str(tmp_path / "resumed" / name))
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_on_another_device_type_is_refused_clearly(tmp_path: Path) -> None:
    """A checkpoint's generator states belong to its device type: a CUDA run cannot go on
    on a CPU (and vice versa); the error names the file and both ways out."""
    cfg = digits_config(iterations=6, checkpoint_every=2)

    def crash(it: int) -> None:
        if it == 3:
            raise Crash

    with pytest.raises(Crash):
        train(cfg, tmp_path, on_iteration=crash)
    ckpt_path = tmp_path / CHECKPOINT
    ckpt = read_checkpoint(ckpt_path)
    assert ckpt["device"] == "cpu"
    ckpt["device"] = "cuda"
    write_checkpoint(ckpt_path, ckpt)
    with pytest.raises(
        ConfigError, match=r"checkpoint\.safetensors was written .* on cuda.*train\.device=cuda"
    ):
        train(cfg, tmp_path)
    assert ckpt_path.exists()  # nothing lost


def test_nan_loss_stops_with_the_iteration(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = {"n": 0}
    real = SelfClassification.loss

    def poisoned(self, model, out, batch):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        loss = real(self, model, out, batch)
        return loss * float("nan") if calls["n"] == 3 else loss

    monkeypatch.setattr(SelfClassification, "loss", poisoned)
    with pytest.raises(TrainingError, match=r"at iteration 3; lower train\.lr.*start over"):
        train(digits_config(), tmp_path)


def test_early_stopping(tmp_path: Path) -> None:
    stop = {"metric": "val_loss", "mode": "max", "patience": 1, "min_delta": 10.0}
    result = train(digits_config(iterations=20, early_stopping=stop), tmp_path)
    assert result.stopped_early
    assert result.iterations == 4  # first eval sets the best, second fails to improve
    assert result.best_iteration == 2


def test_unknown_early_stopping_metric(tmp_path: Path) -> None:
    stop = {"metric": "val_auc"}
    with pytest.raises(ConfigError, match="val_acc"):
        train(digits_config(early_stopping=stop), tmp_path)


def test_learns_digits(tmp_path: Path) -> None:
    """Offline 8x8 digits: far above the 10 % chance level in a few seconds."""
    cfg = digits_config(iterations=150, eval_every=50, lr=3e-3, batch_size=32, steps=[8, 12])
    result = train(cfg, tmp_path)
    losses = [r["val_loss"] for r in result.history]
    assert losses[-1] < losses[0]
    assert result.best_metric > 0.4, result.history


@pytest.mark.parametrize("perception", ["sobel", "learned"])  # learned: a top-level "filters"
def test_finetune_last_layer_keeps_the_rest_bit_identical(tmp_path: Path, perception: str) -> None:
    base = digits_config(iterations=4)
    base = dataclasses.replace(base, model=dataclasses.replace(base.model, perception=perception))
    train(base, tmp_path / "base")
    before = load(tmp_path / "base").state_dict()
    cfg = dataclasses.replace(
        base,
        train=dataclasses.replace(
            base.train, finetune_from=str(tmp_path / "base"), trainable="last", lr=1e-2
        ),
    )
    train(cfg, tmp_path / "tuned")
    after = load(tmp_path / "tuned").state_dict()
    assert not torch.equal(before["fc2.weight"], after["fc2.weight"])
    for key in before:
        if not key.startswith("fc2."):
            assert torch.equal(before[key], after[key]), key


def test_finetune_from_an_incompatible_model(tmp_path: Path) -> None:
    other = digits_config()
    other = dataclasses.replace(other, model=dataclasses.replace(other.model, hidden_width=8))
    from ncaflow.model.cascade import build_model

    save(build_model(other), other, tmp_path / "other" / "model.safetensors")
    base = digits_config()
    cfg = dataclasses.replace(
        base, train=dataclasses.replace(base.train, finetune_from=str(tmp_path / "other"))
    )
    with pytest.raises(ConfigError, match=r"train\.finetune_from"):
        train(cfg, tmp_path / "tuned")


def _same_weights(a: Path, b: Path) -> None:
    for name in ("model.safetensors", "last.safetensors"):
        x, y = load_file(str(a / name)), load_file(str(b / name))
        assert x.keys() == y.keys()
        assert all(torch.equal(x[k], y[k]) for k in x), name


def _crash_at(n: int, error: BaseException) -> Callable[[int], None]:
    def crash(it: int) -> None:
        if it == n:
            raise error

    return crash


def test_resume_with_a_changed_config_is_refused_with_the_keys(tmp_path: Path) -> None:
    """A lowered train.lr (say, after a NaN) would silently be ignored on resume: refused,
    naming every changed key with its old and new value and both ways out."""
    cfg = digits_config(iterations=6, checkpoint_every=2)
    with pytest.raises(Crash):
        train(cfg, tmp_path, on_iteration=_crash_at(3, Crash()))
    changed = digits_config(iterations=6, checkpoint_every=2, lr=1e-3, steps=[4, 8])
    with pytest.raises(ConfigError) as err:
        train(changed, tmp_path)
    message = str(err.value)
    assert "train.lr: 0.002 -> 0.001" in message
    assert "train.steps: [4, 6] -> [4, 8]" in message
    assert "delete it to restart with the new config, or run with the old values" in message
    assert (tmp_path / CHECKPOINT).exists() and not (tmp_path / "model.json").exists()


def test_resume_may_change_progress_and_threads(tmp_path: Path) -> None:
    """RESUME_SAFE_KEYS change nothing in the result: the resumed run stays bit-identical."""
    cfg = digits_config(iterations=6, checkpoint_every=2)
    train(cfg, tmp_path / "straight")
    with pytest.raises(Crash):
        train(cfg, tmp_path / "resumed", on_iteration=_crash_at(3, Crash()))
    threads = torch.get_num_threads()
    try:
        train(digits_config(iterations=6, progress=True, threads=1), tmp_path / "resumed")
    finally:
        torch.set_num_threads(threads)
    _same_weights(tmp_path / "straight", tmp_path / "resumed")


def test_resume_after_an_early_stop_stays_stopped(tmp_path: Path) -> None:
    """Killed between the early stop's checkpoint and the model files: the resumed run
    does not train on, it writes what the uninterrupted run wrote."""
    stop = {"metric": "val_loss", "mode": "max", "patience": 1, "min_delta": 10.0}
    cfg = digits_config(iterations=20, early_stopping=stop)
    straight = train(cfg, tmp_path / "straight")
    with pytest.raises(Crash):
        train(cfg, tmp_path / "resumed", on_iteration=_crash_at(4, Crash()))
    resumed = train(cfg, tmp_path / "resumed")
    assert resumed.iterations == straight.iterations == 4 and resumed.stopped_early
    _same_weights(tmp_path / "straight", tmp_path / "resumed")


def test_interrupt_keeps_the_checkpoint_and_says_how_to_resume(tmp_path: Path) -> None:
    cfg = digits_config(iterations=6, checkpoint_every=2)
    train(cfg, tmp_path / "straight")
    out = tmp_path / "resumed"
    with pytest.raises(TrainingInterrupted) as err:
        train(cfg, out, on_iteration=_crash_at(3, KeyboardInterrupt()))
    assert str(err.value) == (
        f"interrupted at iteration 3; run the same command again to resume from {out}"
    )
    assert read_checkpoint(out / CHECKPOINT)["iteration"] == 2
    assert not (out / "train.lock").exists()
    train(cfg, out)
    _same_weights(tmp_path / "straight", out)


def test_interrupt_while_saving_the_model_leaves_no_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = train_module.save

    def interrupted(model, config, path, meta=None):
        if Path(path).name == "model.safetensors":
            real(model, config, path, meta)  # both files written, then the signal comes
            raise KeyboardInterrupt
        return real(model, config, path, meta)

    monkeypatch.setattr(train_module, "save", interrupted)
    with pytest.raises(TrainingInterrupted, match="interrupted at iteration 6"):
        train(digits_config(), tmp_path)
    assert not (tmp_path / "model.safetensors").exists()
    assert not (tmp_path / "model.json").exists()
    assert (tmp_path / CHECKPOINT).exists()
    monkeypatch.undo()
    assert train(digits_config(), tmp_path).iterations == 6  # resumes at the end and saves
    assert (tmp_path / "model.json").exists() and not (tmp_path / CHECKPOINT).exists()


def test_a_second_trainer_on_the_same_folder_is_refused(tmp_path: Path) -> None:
    pid = os.getpid()
    with folder_lock(tmp_path), pytest.raises(FolderLocked, match=f"{tmp_path} .pid {pid}"):
        train(digits_config(), tmp_path)
    assert not (tmp_path / "model.json").exists()
    train(digits_config(), tmp_path)  # free again


def test_sigterm_handler_is_restored(tmp_path: Path) -> None:
    before = signal.getsignal(signal.SIGTERM)
    train(digits_config(iterations=2), tmp_path)
    assert signal.getsignal(signal.SIGTERM) is before


def test_growing_resume_keeps_the_sample_pool(tmp_path: Path) -> None:
    """The growing task's pool (task state) and an LR schedule go through the checkpoint:
    a resumed run ends bit-identical, and the checkpoint holds the pool the run had."""
    from PIL import Image

    Image.new("RGBA", (8, 8), (200, 40, 40, 255)).save(tmp_path / "target.png")
    cfg = from_dict(
        RunConfig,
        {
            "task": "growing",
            "model": {"hidden_channels": 4, "hidden_width": 16},
            "data": {"target": str(tmp_path / "target.png"), "size": 8, "pad": 2, "pool_size": 8},
            "train": {
                "iterations": 6,
                "batch_size": 2,
                "steps": [3, 5],
                "eval_every": 2,
                "checkpoint_every": 2,
                "scheduler": {"name": "cosine", "warmup": 2},
                "device": "cpu",
                "progress": False,
            },
        },
    )
    train(cfg, tmp_path / "straight")
    pools = []

    def crash(it: int) -> None:
        if it == 4:
            pools.append(task.pool.clone())
            raise Crash

    task = get_task("growing")(config=cfg, device=torch.device("cpu"))
    with pytest.raises(Crash):
        train(cfg, tmp_path / "resumed", task=task, on_iteration=crash)
    assert torch.equal(read_checkpoint(tmp_path / "resumed" / CHECKPOINT)["task"]["pool"], pools[0])
    train(cfg, tmp_path / "resumed")
    _same_weights(tmp_path / "straight", tmp_path / "resumed")
