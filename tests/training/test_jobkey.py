"""`ncaflow train --restart-changed`: a checkpoint is resumed only by the job that left it."""

from __future__ import annotations

from pathlib import Path

from ncaflow.training.jobkey import KEY_FILE, claim, job_key, release
from ncaflow.training.resume import CHECKPOINT


def _left_behind(out: Path, key: str) -> None:
    (out / "tensorboard").mkdir(parents=True)
    (out / "tensorboard" / "events").write_text("x")
    (out / CHECKPOINT).write_bytes(b"ckpt")
    (out / KEY_FILE).write_text(key + "\n")


def test_the_key_follows_the_config_file_and_the_options(tmp_path: Path) -> None:
    run = tmp_path / "run.yaml"
    run.write_text("task: growing\n")
    key = job_key(run, ["train.lr=1e-3"])
    assert len(key) == 16 and key == job_key(run, ["train.lr=1e-3"])
    assert key != job_key(run, ["train.lr=2e-3"])
    run.write_text("task: growing\ntrain: {iterations: 5}\n")
    assert key != job_key(run, ["train.lr=1e-3"])


def test_the_same_job_resumes_and_another_starts_afresh(tmp_path: Path) -> None:
    out = tmp_path / "fold0"
    _left_behind(out, "aaaa")
    assert claim(out, "aaaa")  # resumes: nothing removed
    assert (out / CHECKPOINT).exists() and (out / "tensorboard" / "events").exists()
    assert not claim(out, "bbbb")  # another config: its checkpoint and events go
    assert not (out / CHECKPOINT).exists() and not (out / "tensorboard").exists()
    assert (out / KEY_FILE).read_text() == "bbbb\n"
    release(out)
    assert not (out / KEY_FILE).exists()


def test_a_planted_link_is_removed_not_followed(tmp_path: Path) -> None:
    out, elsewhere = tmp_path / "fold0", tmp_path / "elsewhere"
    (elsewhere / "keep").mkdir(parents=True)
    out.mkdir()
    (out / "tensorboard").symlink_to(elsewhere)
    (out / KEY_FILE).symlink_to(elsewhere / "keep.txt")
    assert not claim(out, "cccc")
    assert (elsewhere / "keep").is_dir() and not (elsewhere / "keep.txt").exists()
    assert not (out / "tensorboard").exists()
    assert (out / KEY_FILE).read_text() == "cccc\n" and not (out / KEY_FILE).is_symlink()
