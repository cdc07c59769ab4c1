"""Bad inputs to ``ncaflow train``: checkpoints (pickled, damaged, edited, from another
config or device), a folder another trainer holds, a full or read-only disk, signals.

Each case resumes a copy of one real checkpoint (a run stopped at iteration 2 of 6)."""

from __future__ import annotations

import errno
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers import digits_config

import ncaflow.training.train as train_module
from ncaflow.config import to_dict
from ncaflow.tasks.selfclass import SelfClassification
from ncaflow.training.checkpoint import read_checkpoint, write_checkpoint
from ncaflow.training.lock import folder_lock
from ncaflow.training.train import CHECKPOINT, train
from tests.robustness.conftest import Outcome

REPO = Path(__file__).resolve().parents[2]
PWNED = "pwned-by-pickle"


class _Stop(Exception):
    pass


def _stop_at(n: int) -> Callable[[int], None]:
    def stop(it: int) -> None:
        if it == n:
            raise _Stop

    return stop


@pytest.fixture(scope="module")
def stopped_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run config (run.yaml) and a folder (out/) holding its checkpoint at iteration 2."""
    root = tmp_path_factory.mktemp("stopped")
    config = digits_config(iterations=6, checkpoint_every=2)
    (root / "run.yaml").write_text(yaml.safe_dump(to_dict(config)))
    with pytest.raises(_Stop):
        train(config, root / "out", on_iteration=_stop_at(3))
    assert (root / "out" / CHECKPOINT).exists()
    return root


@pytest.fixture
def run(stopped_run: Path, tmp_path: Path) -> Path:
    """A fresh copy of ``stopped_run`` for one case."""
    shutil.copy(stopped_run / "run.yaml", tmp_path / "run.yaml")
    shutil.copytree(stopped_run / "out", tmp_path / "out")
    return tmp_path


def _finished(out: Path) -> list[Path]:
    return [out / "model.safetensors", out / "model.json"]


class _Evil:
    """Unpickling this creates a file next to the checkpoint: proof that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.touch, (self.marker,))


def _pickled_checkpoint(out: Path) -> None:
    (out / CHECKPOINT).unlink()
    (out / "checkpoint.pt").write_bytes(pickle.dumps({"model": _Evil(out / PWNED)}))


def _flip_a_tensor_byte(out: Path) -> None:
    data = bytearray((out / CHECKPOINT).read_bytes())
    data[-3] ^= 0x10
    (out / CHECKPOINT).write_bytes(bytes(data))


def _edit_the_json(out: Path) -> None:  # iteration 2 -> 4: the file's length stays
    data = (out / CHECKPOINT).read_bytes()
    old, new = b'\\"iteration\\":2,', b'\\"iteration\\":4,'  # JSON in the JSON header
    assert data.count(old) == 1
    (out / CHECKPOINT).write_bytes(data.replace(old, new))


def _rewrite(change: Callable[[dict[str, Any]], None]) -> Callable[[Path], None]:
    """Edit the checkpoint's state and write it back with a valid checksum."""

    def edit(out: Path) -> None:
        state = read_checkpoint(out / CHECKPOINT)
        change(state)
        write_checkpoint(out / CHECKPOINT, state)

    return edit


def _model_as_checkpoint(out: Path) -> None:
    train(digits_config(iterations=1), out.parent / "other")
    shutil.copy(out.parent / "other" / "model.safetensors", out / CHECKPOINT)


DAMAGED = "damaged checkpoint"
CHECKPOINT_CASES: dict[str, tuple[Callable[[Path], None], str, tuple[str, ...]]] = {
    # id: (how the folder is spoilt, file named, further needles)
    "pickled": (_pickled_checkpoint, "checkpoint.pt", ("pickle", "delete it to start over")),
    "zero-byte": (lambda o: (o / CHECKPOINT).write_bytes(b""), CHECKPOINT, (DAMAGED, "empty")),
    "truncated": (
        lambda o: (o / CHECKPOINT).write_bytes((o / CHECKPOINT).read_bytes()[:-100]),
        CHECKPOINT,
        (DAMAGED, "delete it to start over"),
    ),
    "tensor-byte": (_flip_a_tensor_byte, CHECKPOINT, (DAMAGED, "SHA-256 mismatch")),
    "json-edit": (_edit_the_json, CHECKPOINT, (DAMAGED, "SHA-256 mismatch")),
    "missing-keys": (
        _rewrite(lambda s: [s.pop("optimizer"), s.pop("rng")]),
        CHECKPOINT,
        (DAMAGED, "missing optimizer, rng"),
    ),
    "wrong-type": (
        _rewrite(lambda s: s.update(iteration="2")),
        CHECKPOINT,
        (DAMAGED, "'iteration' holds a str"),
    ),
    "wrong-shape": (
        _rewrite(lambda s: s["model"].update({"fc2.weight": s["model"]["fc2.weight"][:1]})),
        CHECKPOINT,
        (DAMAGED, "does not fit this run", "fc2.weight"),
    ),
    "a-model-file": (_model_as_checkpoint, CHECKPOINT, (DAMAGED, "not an ncaflow checkpoint")),
    "other-device": (
        _rewrite(lambda s: s.update(device="cuda")),
        CHECKPOINT,
        ("written while training on cuda", "train.device=cuda", "delete it to start over"),
    ),
}


@pytest.mark.parametrize("case", sorted(CHECKPOINT_CASES))
def test_bad_checkpoint(cli: Any, run: Path, case: str) -> None:
    spoil, name, needles = CHECKPOINT_CASES[case]
    out = run / "out"
    spoil(out)
    outcome = cli("train", "--config", run / "run.yaml", "--out", out)
    outcome.fails_cleanly(str(out / name), *needles, absent=[*_finished(out), out / PWNED])
    assert (out / name).exists()  # left for the user to look at or delete


@pytest.mark.parametrize(
    ("override", "change"),
    [
        ("train.lr=0.001", "train.lr: 0.002 -> 0.001"),
        ("train.steps=[4, 8]", "train.steps: [4, 6] -> [4, 8]"),
        ("train.optimizer=adamw", "train.optimizer: 'adam' -> 'adamw'"),
        ("model.hidden_width=16", "model.hidden_width: 32 -> 16"),
        ("data.fold=1", "data.fold: '<unset>' -> 1"),
        ("train.grad_norm=true", "train.grad_norm: False -> True"),
        ("train.scheduler.name=cosine", "train.scheduler.name: 'constant' -> 'cosine'"),
    ],
    ids=["float", "list", "choice", "model", "new-key", "bool", "nested"],
)
def test_checkpoint_of_another_config(cli: Any, run: Path, override: str, change: str) -> None:
    out = run / "out"
    outcome = cli("train", "--config", run / "run.yaml", "--out", out, "--set", override)
    outcome.fails_cleanly(
        str(out / CHECKPOINT),
        change,
        "delete it to restart with the new config, or run with the old values",
        absent=_finished(out),
    )


def test_folder_held_by_another_trainer(cli: Any, run: Path) -> None:
    out = run / "out"
    with folder_lock(out):
        outcome = cli("train", "--config", run / "run.yaml", "--out", out)
    outcome.fails_cleanly(
        f"another ncaflow train is writing to {out} (pid {os.getpid()})",
        "wait for it or use another --out",
        absent=_finished(out),
    )


def test_out_is_a_file(cli: Any, run: Path) -> None:
    (run / "file").write_text("")
    outcome = cli("train", "--config", run / "run.yaml", "--out", run / "file")
    outcome.fails_cleanly(f"cannot write {run / 'file'}", "use another --out")


def _raise(err: OSError) -> Callable[..., None]:
    def writer(*args: Any, **kwargs: Any) -> None:
        raise err

    return writer


@pytest.mark.parametrize(
    ("err", "needle"),
    [
        (OSError(errno.ENOSPC, "No space left on device"), "disk full while writing"),
        (OSError(errno.EROFS, "Read-only file system"), "(read-only or not permitted)"),
        (PermissionError(errno.EACCES, "Permission denied"), "(read-only or not permitted)"),
    ],
    ids=["enospc", "erofs", "eacces"],
)
def test_checkpoint_write_fails(
    cli: Any, run: Path, monkeypatch: pytest.MonkeyPatch, err: OSError, needle: str
) -> None:
    out = run / "out"
    before = (out / CHECKPOINT).read_bytes()
    monkeypatch.setattr(train_module, "write_checkpoint", _raise(err))
    outcome = cli("train", "--config", run / "run.yaml", "--out", out)
    outcome.fails_cleanly(needle, str(out / CHECKPOINT), absent=_finished(out))
    assert (out / CHECKPOINT).read_bytes() == before  # the last good one stays


@pytest.mark.parametrize(
    ("err", "needle"),
    [
        (OSError(errno.ENOSPC, "No space left on device"), "disk full while writing"),
        (OSError(errno.EROFS, "Read-only file system"), "cannot write"),
    ],
    ids=["enospc", "erofs"],
)
def test_model_write_fails(
    cli: Any, run: Path, monkeypatch: pytest.MonkeyPatch, err: OSError, needle: str
) -> None:
    """The weights are written, then model.json fails: neither file stays, the
    checkpoint does (the same command resumes and saves)."""
    out, real = run / "out", train_module.save

    def save(model: Any, config: Any, path: Path, meta: Any = None) -> Path:
        if Path(path).name == "model.safetensors":
            real(model, config, path, meta)
            raise err
        return real(model, config, path, meta)

    monkeypatch.setattr(train_module, "save", save)
    outcome = cli("train", "--config", run / "run.yaml", "--out", out)
    outcome.fails_cleanly(f"{needle} {out / 'model.safetensors'}", absent=_finished(out))
    assert (out / CHECKPOINT).exists()


def _check_interrupted(outcome: Any, out: Path) -> None:
    """Exit 130, the one line that says how to resume, the checkpoint whole, no model."""
    assert outcome.code == 130, outcome.err
    assert "Traceback" not in outcome.err and len(outcome.err.strip().splitlines()) == 1
    line = outcome.err.strip()
    assert line.startswith("ncaflow train: interrupted at iteration "), line
    assert line.endswith(f"; run the same command again to resume from {out}"), line
    assert 2 <= int(line.split("iteration ")[1].split(";")[0]) < 12
    assert read_checkpoint(out / CHECKPOINT)["iteration"] >= 2
    assert not any(p.exists() for p in _finished(out))
    assert not (out / "train.lock").exists()


def _resumes_to_the_end(cli: Any, argv: list[str], out: Path) -> None:
    resumed = cli(*argv)
    assert resumed.code == 0 and "for 12 iterations" in resumed.out, resumed.err
    assert all(p.exists() for p in _finished(out)) and not (out / CHECKPOINT).exists()


def _slow_run(tmp_path: Path) -> tuple[list[str], Path]:
    """12 iterations, a checkpoint every 2; the caller holds the run up (Ctrl-C: it waits
    after the first checkpoint; SIGTERM: 0.3 s an iteration), which only the interrupted
    run waits for (a signal cuts the sleep short)."""
    config = digits_config(iterations=12, checkpoint_every=2, eval_every=12)
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(to_dict(config)))
    out = tmp_path / "out"
    return ["train", "--config", str(tmp_path / "run.yaml"), "--out", str(out)], out


def _wait_for(path: Path) -> None:
    deadline = time.monotonic() + 60
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(0.02)


# a subprocess that trains until its first checkpoint exists, then says so (a file) and
# waits in the training loop; it takes Ctrl-C like a terminal
WAITING_TRAIN = """
import os, signal, sys, time
from ncaflow.tasks.selfclass import SelfClassification
from ncaflow.cli import main
after = SelfClassification.after_step
def after_step(*a):
    after(*a)
    if os.path.exists(os.environ["NCAFLOW_TEST_CHECKPOINT"]):
        open(os.environ["NCAFLOW_TEST_WAITING"], "w").close()
        while True:
            time.sleep(0.05)
SelfClassification.after_step = after_step
signal.signal(signal.SIGINT, signal.default_int_handler)
sys.exit(main(sys.argv[1:]))
"""


def test_ctrl_c_keeps_the_checkpoint_and_the_run_resumes(cli: Any, tmp_path: Path) -> None:
    """A real SIGINT to a real process (the console's exit code and stderr). The process
    stops after its first checkpoint and waits there, so the signal always finds it
    mid-run, however slowly a loaded machine gets it there (a state, not a time)."""
    argv, out = _slow_run(tmp_path)
    waiting = tmp_path / "waiting"
    env = {
        **os.environ,
        "PYTHONPATH": f"{REPO / 'src'}{os.pathsep}{REPO / 'tests'}",
        "NCAFLOW_TEST_WAITING": str(waiting),
        "NCAFLOW_TEST_CHECKPOINT": str(out / CHECKPOINT),
    }
    proc = subprocess.Popen(
        [sys.executable, "-c", WAITING_TRAIN, *argv], env=env, stderr=subprocess.PIPE, text=True
    )
    try:
        while not waiting.exists():  # the child writes it once a checkpoint exists
            assert proc.poll() is None, f"training ended before its checkpoint: {proc.stderr}"
            time.sleep(0.02)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=300)
    finally:
        proc.kill()
    _check_interrupted(Outcome(proc.returncode, "", err), out)
    _resumes_to_the_end(cli, argv, out)


def test_sigterm_keeps_the_checkpoint_and_the_run_resumes(
    cli: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGTERM (SLURM, Snakemake, kill) sent to this process while it trains: train()
    turns it into the same clean stop as Ctrl-C."""
    argv, out = _slow_run(tmp_path)
    after = SelfClassification.after_step

    def slow(*args: Any) -> None:
        time.sleep(0.3)
        after(*args)

    def unhandled(signum: int, frame: object) -> None:
        raise _Stop("SIGTERM reached the test's handler: train() did not handle it")

    monkeypatch.setattr(SelfClassification, "after_step", slow)
    previous = signal.signal(signal.SIGTERM, unhandled)
    sender = threading.Thread(
        target=lambda: (_wait_for(out / CHECKPOINT), os.kill(os.getpid(), signal.SIGTERM))
    )
    try:
        sender.start()
        outcome = cli(*argv)
        sender.join()
    finally:
        signal.signal(signal.SIGTERM, previous)
    _check_interrupted(outcome, out)
    monkeypatch.setattr(SelfClassification, "after_step", after)
    _resumes_to_the_end(cli, argv, out)


@pytest.mark.filterwarnings("error::pytest.PytestUnhandledThreadExceptionWarning")
def test_tensorboard_write_fails(cli: Any, run: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The event file is written by a background thread; its failure (here: disk full)
    surfaces in the trainer as one line naming the folder, the thread prints no traceback
    of its own (the filter turns one into an error), and the last checkpoint stays."""
    from tensorboard.summary.writer import record_writer

    out = run / "out"
    before = (out / CHECKPOINT).read_bytes()
    monkeypatch.setattr(
        record_writer.RecordWriter, "write", _raise(OSError(errno.ENOSPC, "No space left"))
    )
    outcome = cli("train", "--config", run / "run.yaml", "--out", out)
    needles = ("disk full while writing", str(out / "tensorboard"))
    outcome.fails_cleanly(*needles, absent=_finished(out))
    assert (out / CHECKPOINT).read_bytes() == before


# -- issue 26: nothing follows a planted link, a finished model stays, files are 0644 ----------


@pytest.fixture
def fresh(tmp_path: Path) -> tuple[list[str], Path]:
    """A 2-iteration run config and an --out folder that does not exist yet."""
    config = digits_config(iterations=2, checkpoint_every=2, eval_every=2)
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(to_dict(config)))
    out = tmp_path / "out"
    return ["train", "--config", str(tmp_path / "run.yaml"), "--out", str(out)], out


@pytest.mark.parametrize("name", ["train.lock", "tensorboard"])
def test_a_link_planted_in_the_output_folder_is_not_followed(
    cli: Any, fresh: tuple[list[str], Path], tmp_path: Path, name: str
) -> None:
    """`ln -s VICTIM out/train.lock` (or out/tensorboard -> a folder elsewhere): refused,
    and the victim is untouched."""
    argv, out = fresh
    out.mkdir()
    victim = tmp_path / "victim"
    if name == "tensorboard":
        victim.mkdir()
    else:
        victim.write_text("precious\n")
    (out / name).symlink_to(victim)
    outcome = cli(*argv)
    outcome.fails_cleanly(
        str(out / name), "symbolic link", "remove the link", absent=_finished(out)
    )
    if name == "tensorboard":
        assert list(victim.iterdir()) == []
    else:
        assert victim.read_text() == "precious\n"


def test_a_finished_model_of_another_config_is_not_replaced(
    cli: Any, fresh: tuple[list[str], Path]
) -> None:
    argv, out = fresh
    assert cli(*argv).code == 0
    before = (out / "model.json").read_bytes()
    outcome = cli(*argv, "--set", "train.lr=0.001")
    outcome.fails_cleanly(
        str(out / "model.json"), "train.lr: 0.002 -> 0.001", "--overwrite", "another --out"
    )
    assert (out / "model.json").read_bytes() == before
    assert cli(*argv, "--set", "train.lr=0.001", "--overwrite").code == 0
    assert json.loads((out / "model.json").read_text())["config"]["train"]["lr"] == 0.001


def test_ctrl_c_before_the_first_checkpoint_says_nothing_was_saved(
    cli: Any, fresh: tuple[list[str], Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    argv, out = fresh

    def interrupt(*args: Any) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(SelfClassification, "after_step", interrupt)
    outcome = cli(*argv)
    assert outcome.code == 130
    outcome.fails_cleanly("interrupted at iteration 0", "nothing was saved", "start over")
    assert "resume" not in outcome.err
    assert not (out / CHECKPOINT).exists() and not any(p.exists() for p in _finished(out))


def test_training_outputs_are_0644_under_umask_022(cli: Any, fresh: tuple[list[str], Path]) -> None:
    """Models, history and metrics on a shared cluster disk are readable by the group."""
    argv, out = fresh
    old = os.umask(0o022)
    try:
        assert cli(*argv).code == 0
        metrics = out / "metrics.json"
        assert cli("evaluate", "--model", out, "--split", "val", "--out", metrics).code == 0
    finally:
        os.umask(old)
    for path in [*_finished(out), out / "history.csv", out / "last.json", metrics]:
        assert (path.stat().st_mode & 0o777) == 0o644, path


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("data.eval_batch=65536", "data.eval_batch"),
        ("train.batch_size=65536", "train.batch_size"),
    ],
)
def test_a_run_too_large_for_this_machine_is_refused_before_allocation(
    cli: Any,
    fresh: tuple[list[str], Path],
    override: str,
    key: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The estimate (state x batch x steps kept for backward, pool, evaluation batch,
    weights) is compared with this machine's memory: here a machine of 1 GB."""
    from ncaflow.guard import limits

    monkeypatch.setattr(limits, "machine_memory", lambda device="cpu": (10**9, "RAM"))
    argv, out = fresh
    outcome = cli(*argv, "--set", override, "--set", "train.steps=[64]")
    outcome.fails_cleanly(f"key '{key}'", "needs about", "1.0 GB of RAM", f"lower {key}")
    assert not out.exists()
