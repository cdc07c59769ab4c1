"""Several training jobs per GPU (ncaflow.runtime.gpuslots, workflow/profiles/gpu and slurm-packed).

On CPU with fake device lists: which GPU a slot gets, that a held slot is not handed out
twice, that the command runs pinned with the shared caches, that the profiles say what they
should, and that a model trained in a pack is byte-identical to the same job run alone.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from ncaflow.runtime import gpuslots
from ncaflow.runtime.gpuslots import claim_slot, lock_folder, slot_device, visible_devices

REPO = Path(__file__).resolve().parents[2]
PROFILES = REPO / "workflow" / "profiles"


def test_visible_devices_from_the_environment_or_the_device_files(tmp_path: Path) -> None:
    assert visible_devices({"CUDA_VISIBLE_DEVICES": "2,3"}) == ["2", "3"]
    assert visible_devices({"CUDA_VISIBLE_DEVICES": "GPU-ab12, GPU-cd34"}) == [
        "GPU-ab12",
        "GPU-cd34",
    ]
    assert visible_devices({"CUDA_VISIBLE_DEVICES": ""}) == []
    assert visible_devices({"CUDA_VISIBLE_DEVICES": "-1"}) == []
    for name in ("nvidia0", "nvidia10", "nvidia2", "nvidiactl", "nvidia-uvm", "nvidia-modeset"):
        (tmp_path / name).touch()
    assert visible_devices({}, dev=tmp_path) == ["0", "2", "10"]
    assert visible_devices({}, dev=tmp_path / "missing") == []


@pytest.mark.parametrize("n, k", [(1, 4), (3, 2), (8, 16)])
def test_slots_spread_over_every_device_evenly(n: int, k: int) -> None:
    devices = [f"fake{i}" for i in range(n)]
    got = [slot_device(s, devices) for s in range(n * k)]
    assert got[:n] == devices  # the first N jobs land on N different GPUs
    assert Counter(got) == {d: k for d in devices}
    with pytest.raises(ValueError):
        slot_device(0, [])


def test_a_held_slot_is_not_handed_out_again(tmp_path: Path) -> None:
    held = [claim_slot(tmp_path, 3) for _ in range(3)]
    assert sorted(slot for slot, _ in held) == [0, 1, 2]
    with pytest.raises(TimeoutError):
        claim_slot(tmp_path, 3, poll_s=0.01, timeout_s=0.05)
    os.close(held[1][1])  # that job ended
    slot, fd = claim_slot(tmp_path, 3, poll_s=0.01, timeout_s=1)
    assert slot == 1
    for _, f in [held[0], held[2], (slot, fd)]:
        os.close(f)


def test_lock_folder_is_per_node_and_allocation(tmp_path: Path) -> None:
    a = lock_folder(tmp_path, {"SLURM_JOB_ID": "123"})
    b = lock_folder(tmp_path, {"SLURM_JOB_ID": "124"})
    assert a != b and a.parent == tmp_path and a.name.endswith("-123")
    assert lock_folder(tmp_path, {"SLURM_JOB_ID": "../x"}).parent == tmp_path
    assert lock_folder(tmp_path, {}).name.endswith("-local")


def _pinned(tmp_path: Path, *extra: str, wait: str = "0") -> subprocess.Popen[str]:
    code = (
        "import os, time; time.sleep(float(os.environ['WAIT']));"
        "print(os.environ.get('CUDA_VISIBLE_DEVICES'), os.environ.get('TRITON_CACHE_DIR'),"
        "os.environ.get('TORCHINDUCTOR_CACHE_DIR'))"
    )
    cmd = [
        sys.executable,
        "-m",
        "ncaflow.runtime.gpuslots",
        "--locks",
        str(tmp_path / "locks"),
        *extra,
    ]
    cmd += ["--", sys.executable, "-c", code]
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "WAIT": wait}
    env.pop("TRITON_CACHE_DIR", None)
    env.pop("TORCHINDUCTOR_CACHE_DIR", None)
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def test_jobs_run_pinned_to_their_slots_device_with_shared_caches(tmp_path: Path) -> None:
    """Two jobs at once on two fake GPUs, one slot each: one job per GPU; a third waits for
    a free slot. Each sees only its GPU and the shared compile caches."""
    args = ("--devices", "fakeA,fakeB", "--per-device", "1", "--cache", str(tmp_path / "cc"))
    first = _pinned(tmp_path, *args, wait="2")
    time.sleep(0.5)
    second = _pinned(tmp_path, *args, wait="2")
    time.sleep(0.5)
    third = _pinned(tmp_path, *args)
    outs = [p.communicate(timeout=60) for p in (first, second, third)]
    assert [p.returncode for p in (first, second, third)] == [0, 0, 0], outs
    seen = [out.split() for out, _ in outs]
    assert {seen[0][0], seen[1][0]} == {"fakeA", "fakeB"}  # at once: different GPUs
    assert seen[2][0] in {"fakeA", "fakeB"}
    cache = (tmp_path / "cc").resolve()
    assert all(s[1:] == [str(cache / "triton"), str(cache / "inductor")] for s in seen)


def test_no_pinning_without_slots_or_devices(tmp_path: Path) -> None:
    for args in (
        ("--devices", "fake0", "--per-device", "0"),
        ("--devices", "", "--per-device", "2"),
    ):
        out, err = _pinned(tmp_path, *args, "--cache", str(tmp_path / "cc")).communicate(timeout=60)
        assert out.split()[1:] == ["None", "None"], (args, out, err)
    assert not (tmp_path / "locks").exists()


def test_a_planted_symlink_is_refused_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = lock_folder(tmp_path / "locks")
    folder.mkdir(parents=True)
    victim = tmp_path / "victim"
    victim.write_text("keep")
    (folder / "slot-0").symlink_to(victim)
    rc = gpuslots.main(
        [
            "--devices",
            "fake0",
            "--per-device",
            "1",
            "--locks",
            str(tmp_path / "locks"),
            "--",
            "true",
        ]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1 and len(err) == 1 and "cannot lock a slot" in err[0]
    assert victim.read_text() == "keep"


def _parse_profile(name: str) -> dict[str, object]:
    profiles = pytest.importorskip("snakemake.profiles")
    path = PROFILES / name / "config.yaml"
    stream = io.StringIO(path.read_text())
    stream.name = str(path)
    return dict(profiles.ProfileConfigFileParser().parse(stream))


def test_gpu_profile_sizes_slots_from_the_visible_gpus(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1,2")
    monkeypatch.setenv("NCAFLOW_JOBS_PER_GPU", "5")
    prof = _parse_profile("gpu")
    assert prof["resources"] == ["gpu=15"]
    assert "train:jobs_per_gpu=5" in str(prof["set-resources"])
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert _parse_profile("gpu")["resources"] == ["gpu=5"]  # no GPU: jobs run unpinned


def test_slurm_packed_profile_groups_training_jobs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NCAFLOW_JOBS_PER_GPU", "6")
    prof = _parse_profile("slurm-packed")
    assert prof["groups"] == ["train=gpu_pack"]
    assert prof["group-components"] == ["gpu_pack=6"]
    sets = str(prof["set-resources"])
    assert "train:gpu=0" in sets and "train:jobs_per_gpu=6" in sets and "gpu:1" in sets


def test_packed_training_is_byte_identical_to_training_alone(tmp_path: Path) -> None:
    """The same tiny growing job twice at once through gpuslots (two slots of one fake GPU)
    and once alone: the three models are byte for byte the same."""
    sets = [
        "data.size=12", "data.pad=2", "data.pool_size=4", "data.eval_batch=2",
        "data.persistence_steps=8", "model.hidden_width=16", "model.hidden_channels=8",
        "train.iterations=3", "train.batch_size=2", "train.steps=[4,6]", "train.eval_every=3",
        "train.checkpoint_every=3", "train.log_images_every=1000", "train.progress=false",
        "train.device=cpu",
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "NCAFLOW_COMPILE": "0"}

    def train(out: str, packed: bool) -> subprocess.Popen[str]:
        cmd = [sys.executable, "-m", "ncaflow.cli", "train", "--config"]
        cmd += [str(REPO / "config" / "runs" / "growing.yaml"), "--out", str(tmp_path / out)]
        for s in sets:
            cmd += ["--set", s]
        if packed:
            pin = [sys.executable, "-m", "ncaflow.runtime.gpuslots", "--devices", "fake0"]
            pin += ["--per-device", "2", "--locks", str(tmp_path / "locks"), "--"]
            cmd = pin + cmd
        return subprocess.Popen(cmd, env=env, cwd=tmp_path, text=True, stderr=subprocess.PIPE)

    jobs = [train("packed-a", True), train("packed-b", True)]
    errs = [p.communicate(timeout=600)[1] for p in jobs]
    alone = train("alone", False)
    errs.append(alone.communicate(timeout=600)[1])
    assert [p.returncode for p in (*jobs, alone)] == [0, 0, 0], errs
    ref = (tmp_path / "alone" / "model.safetensors").read_bytes()
    for name in ("packed-a", "packed-b"):
        assert (tmp_path / name / "model.safetensors").read_bytes() == ref, name
