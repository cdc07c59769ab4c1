"""Several training jobs per GPU, each pinned to one device: a job claims a GPU slot, then runs.

    python -m ncaflow.runtime.gpuslots --per-device 4 --locks DIR [--cache DIR] -- ncaflow train ...

The visible devices (``CUDA_VISIBLE_DEVICES``, else the ``/dev/nvidiaN`` device files) times
``--per-device`` make the slots; slot i belongs to device ``i mod N``, so the first N jobs land
on N different GPUs. The job takes the first free slot (an exclusive ``flock`` on
``DIR/slot-i``, held by the command itself, so a crash frees it), waits while all are taken,
and runs the command with ``CUDA_VISIBLE_DEVICES`` set to its slot's device: inside the job
that GPU is ``cuda:0``. ``--cache DIR`` sets ``TRITON_CACHE_DIR`` and
``TORCHINDUCTOR_CACHE_DIR`` below DIR (unless already set), so the jobs share compiled kernels.
With ``--per-device 0`` or no visible device the command runs unchanged (no lock, no cache
variables). workflow/rules/train.smk starts every training job through this, with the job's
resource ``jobs_per_gpu`` (0 unless a profile sets it: workflow/profiles/gpu, slurm-packed).
"""

from __future__ import annotations

import argparse
import fcntl
import os
import re
import socket
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

__all__ = ["claim_slot", "lock_folder", "slot_device", "visible_devices"]


def visible_devices(env: Mapping[str, str] | None = None, dev: Path = Path("/dev")) -> list[str]:
    """The GPUs a job may use, as CUDA_VISIBLE_DEVICES entries: that variable's entries if it
    is set (``""`` or ``-1``: none), else one index per ``/dev/nvidiaN`` file."""
    env = os.environ if env is None else env
    given = env.get("CUDA_VISIBLE_DEVICES")
    if given is not None:
        items = [d.strip() for d in given.split(",") if d.strip()]
        return [] if items[:1] == ["-1"] else items
    try:
        found = [m.group(1) for p in dev.iterdir() if (m := re.fullmatch(r"nvidia(\d+)", p.name))]
    except OSError:
        return []
    return sorted(found, key=int)


def slot_device(slot: int, devices: Sequence[str]) -> str:
    """The device of slot ``slot``: round robin, so slots 0..N-1 are N different GPUs."""
    if not devices:
        raise ValueError("no devices to assign")
    return devices[slot % len(devices)]


def lock_folder(base: Path, env: Mapping[str, str] | None = None) -> Path:
    """The slot locks of this machine and allocation: ``base/<host>-<SLURM_JOB_ID|local>``, so
    that jobs of other nodes or allocations sharing the folder never hold each other's slots."""
    env = os.environ if env is None else env
    job = re.sub(r"[^A-Za-z0-9_.-]", "_", env.get("SLURM_JOB_ID", "local")) or "local"
    host = re.sub(r"[^A-Za-z0-9_.-]", "_", socket.gethostname()) or "host"
    return base / f"{host}-{job}"


def _open_lock(path: Path) -> int:
    """An open lock file that is no symlink planted there (O_NOFOLLOW), mode 0644 & umask."""
    return os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)


def claim_slot(
    folder: Path, slots: int, *, poll_s: float = 0.5, timeout_s: float | None = None
) -> tuple[int, int]:
    """Lock the first free of ``slots`` slot files in ``folder``: (slot, open fd holding the
    lock). Waits while every slot is held; TimeoutError after ``timeout_s``."""
    if slots < 1:
        raise ValueError(f"slots must be at least 1, got {slots}")
    folder.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    while True:
        for slot in range(slots):
            fd = _open_lock(folder / f"slot-{slot}")
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            return slot, fd
        if timeout_s is not None and time.monotonic() - start > timeout_s:
            raise TimeoutError(f"all {slots} GPU slots in {folder} stayed taken")
        time.sleep(poll_s)


def job_env(
    device: str | None, cache: Path | None, env: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The command's environment: pinned to ``device``; compile caches below ``cache``."""
    out = dict(os.environ if env is None else env)
    if device is not None:
        out["CUDA_VISIBLE_DEVICES"] = device
    if cache is not None:
        out.setdefault("TRITON_CACHE_DIR", str(cache.resolve() / "triton"))
        out.setdefault("TORCHINDUCTOR_CACHE_DIR", str(cache.resolve() / "inductor"))
    return out


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ncaflow.runtime.gpuslots", description=__doc__)
    p.add_argument(
        "--per-device", type=int, required=True, help="jobs at once on one GPU (0: no pinning)"
    )
    p.add_argument("--locks", type=Path, required=True, help="folder of the slot lock files")
    p.add_argument("--cache", type=Path, help="shared Triton/Inductor cache folder")
    p.add_argument("--devices", help="comma-separated device list (default: the visible ones)")
    p.add_argument("command", nargs=argparse.REMAINDER, help="-- then the command to run")
    args = p.parse_args(argv)
    cmd = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not cmd:
        print(
            "ncaflow.runtime.gpuslots: no command given after --; add one",
            file=sys.stderr,
        )
        return 2
    if args.per_device < 0:
        print(
            f"ncaflow.runtime.gpuslots: --per-device {args.per_device}: use 0 or more",
            file=sys.stderr,
        )
        return 2
    devices = (
        [d for d in args.devices.split(",") if d] if args.devices is not None else visible_devices()
    )
    device, cache = None, None
    if devices and args.per_device > 0:
        try:
            slot, fd = claim_slot(lock_folder(args.locks), len(devices) * args.per_device)
        except OSError as err:
            print(
                f"ncaflow.runtime.gpuslots: cannot lock a slot in {args.locks}: {err}",
                file=sys.stderr,
            )
            return 1
        os.set_inheritable(fd, True)  # the command holds the lock until it exits
        device = slot_device(slot, devices)
        print(
            f"ncaflow.runtime.gpuslots: slot {slot}, CUDA_VISIBLE_DEVICES={device}", file=sys.stderr
        )
        if args.cache is not None:
            cache = args.cache
            cache.mkdir(parents=True, exist_ok=True)
    try:
        os.execvpe(cmd[0], cmd, job_env(device, cache))
    except OSError as err:
        print(
            f"ncaflow.runtime.gpuslots: cannot run {cmd[0]!r}: {err}",
            file=sys.stderr,
        )
        return 127
    return 0  # unreachable: exec replaced this process


if __name__ == "__main__":
    sys.exit(main())
