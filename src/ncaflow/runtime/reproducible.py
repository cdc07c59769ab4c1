"""Reproducible CPU training: the same bytes whatever the x86-64 CPU's instruction set.

On a CPU, PyTorch picks its kernels by the processor it finds, and kernels for
different instruction sets add in different orders, so the same run differs in
the last bits from one CPU to another (then the differences grow over training).
What depends on the CPU in an ncaflow training run (measured: benchmarks/README.md,
"Same bytes on any x86-64 CPU"):

- MKL's matrix products (every ``torch.mm`` of the fast path, the 1x1 layers):
  MKL dispatches by vendor and instruction set. ``MKL_CBWR=COMPATIBLE`` makes it
  take one SSE2 code path on every Intel or compatible CPU.
- ATen's vectorised kernels (element-wise ops, reductions, exp/log): compiled
  for default, AVX2 and AVX-512 and chosen at start-up. ``ATEN_CPU_CAPABILITY=avx2``
  makes an AVX-512 CPU run the AVX2 ones (a CPU without AVX2 and FMA stays on the
  default ones, and ``environment()`` records that).
- oneDNN is not reached by training (checked with ``ONEDNN_VERBOSE``);
  ``DNNL_MAX_CPU_ISA=AVX2`` caps it all the same.

Together with the same thread count (``train.threads``, else torch's default, which
reads ``OMP_NUM_THREADS``: Snakemake sets it to a job's threads; another count gives
other bytes) and the same PyTorch build, ``train.reproducible: true`` gives the same
bytes on any x86-64 CPU with AVX2 and FMA. The libraries read their variables once,
when torch starts its kernels, so they must be in the environment before ``import torch``:
``ncaflow train`` re-executes itself with them (:func:`reexec_if_needed`); a
Python program that calls ``ncaflow.train`` calls :func:`apply` before it imports
torch, and ``train`` refuses to start a reproducible run on a CPU otherwise
(:func:`require`).
"""

from __future__ import annotations

import ctypes
import os
import platform
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ncaflow.config import ConfigError  # a leaf without torch: apply() stays torch-free

__all__ = [
    "ENVIRONMENT",
    "MARKER",
    "apply",
    "environment",
    "guarantee",
    "in_effect",
    "missing",
    "reexec_if_needed",
    "require",
    "wanted",
]

ENVIRONMENT: dict[str, str] = {
    "MKL_CBWR": "COMPATIBLE",
    "ATEN_CPU_CAPABILITY": "avx2",
    "DNNL_MAX_CPU_ISA": "AVX2",
    # the fast path's perception stays eager: compiled, it would be C++ that the local
    # compiler builds for the local CPU, which no variable above pins
    "NCAFLOW_COMPILE": "0",
}
MARKER = "NCAFLOW_REPRODUCIBLE_EXEC"  # set on re-execution: never re-execute twice
_MKL_BRANCHES = {1: "OFF", 2: "AUTO", 3: "COMPATIBLE", 4: "SSE2", 8: "SSE4_2", 9: "AVX", 10: "AVX2"}
_MKL_BRANCHES |= {12: "AVX512", 14: "AVX512_E1"}


def _cpu_flags() -> set[str]:
    """The CPU's feature flags from /proc/cpuinfo (empty where there is none)."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="ascii", errors="replace")
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.partition(":")[2].split())
    return set()


def wanted() -> dict[str, str]:
    """The variables a reproducible run needs here: :data:`ENVIRONMENT`, with ATen on its
    default kernels where the CPU has no AVX2 and FMA (it would not run the AVX2 ones);
    none on other processors (Arm: nothing to pin, and nothing is promised)."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return {}
    env = dict(ENVIRONMENT)
    flags = _cpu_flags()
    if flags and not {"avx2", "fma"} <= flags:
        env["ATEN_CPU_CAPABILITY"] = "default"
    return env


def missing(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The wanted variables that ``env`` (default: this process's) lacks or sets otherwise."""
    env = os.environ if env is None else env
    return {k: v for k, v in wanted().items() if env.get(k) != v}


def _mkl_branch() -> str | None:
    """MKL's code branch in effect, asked through the MKL service symbol inside
    libtorch_cpu (None where there is no such library or symbol to ask)."""
    try:
        import torch

        lib = ctypes.CDLL(str(Path(torch.__file__).parent / "lib" / "libtorch_cpu.so"))
        get = lib.mkl_serv_cbwr_get
    except (OSError, AttributeError):
        return None
    get.restype = ctypes.c_int
    branch = int(get(ctypes.c_int(1)))  # MKL_CBWR_BRANCH
    return _MKL_BRANCHES.get(branch, str(branch))


def _capability() -> str:
    import torch

    return str(torch.backends.cpu.get_cpu_capability())


def in_effect() -> bool:
    """Whether this process runs the kernels that :func:`wanted` asks for (torch's own
    answer, so a variable set after torch started counts as not set)."""
    want = wanted()
    if not want:
        return True
    if _capability().lower() != want["ATEN_CPU_CAPABILITY"]:
        return False
    branch = _mkl_branch()
    if branch is None:  # no MKL to ask: trust the environment it read at start-up
        return os.environ.get("MKL_CBWR") == want["MKL_CBWR"]
    return branch == want["MKL_CBWR"]


def require(*, reproducible: bool, device_type: str) -> None:
    """Refuse a reproducible CPU run in a process that started without the variables."""
    if not reproducible or device_type != "cpu" or in_effect():
        return
    names = " ".join(f"{k}={v}" for k, v in wanted().items())
    raise ConfigError(
        "key 'train.reproducible': true, but this process started torch without "
        f"{names}; run `ncaflow train` (it sets them), call ncaflow.runtime.reproducible.apply() "
        "before importing torch, or set train.reproducible=false",
        "train.reproducible",
    )


def apply() -> None:
    """Set the variables in this process; call it before the first ``import torch`` (the
    Python counterpart of what ``ncaflow train`` does). Raises if torch started already
    with other kernels."""
    if "torch" in sys.modules and not in_effect():
        raise RuntimeError(
            "ncaflow.runtime.reproducible.apply() was called after torch started its kernels; call "
            "it before the first `import torch` (or start Python with "
            + " ".join(f"{k}={v}" for k, v in wanted().items())
            + ")"
        )
    os.environ.update(wanted())


def reexec_if_needed(argv: Sequence[str]) -> None:
    """Replace this process by ``python -m ncaflow.cli ARGV`` with the variables set, unless
    they are set already or this process is such a re-execution."""
    if not missing() or os.environ.get(MARKER):
        return
    sys.stdout.flush()
    sys.stderr.flush()
    env = {**os.environ, **wanted(), MARKER: "1"}
    os.execve(sys.executable, [sys.executable, "-m", "ncaflow.cli", *argv], env)


def environment(*, reproducible: bool, device_type: str) -> dict[str, Any]:
    """What model.json records under ``meta.environment``: the mode, torch, the thread
    count and, on a CPU, the kernels in effect (:func:`guarantee` reads it back)."""
    import torch

    env: dict[str, Any] = {
        "mode": "reproducible" if reproducible else "fast",
        "torch": torch.__version__,
        "device": device_type,
        "machine": platform.machine(),
        "threads": torch.get_num_threads(),
    }
    if device_type == "cpu":
        env["cpu_capability"] = _capability()
        env["mkl_branch"] = _mkl_branch() or ("?" if torch.backends.mkl.is_available() else "none")
    return env


def guarantee(meta: Mapping[str, Any]) -> str:
    """One line for ``ncaflow info`` and ``ncaflow check``: which guarantee the bytes of a
    saved model carry, from its ``meta.environment`` (data: only known values count)."""
    env = meta.get("environment")
    if not isinstance(env, Mapping):
        return "environment not recorded (trained before ncaflow recorded it)"
    text = {k: str(v)[:40] for k, v in env.items() if isinstance(v, str | int)}
    made = f"torch {text.get('torch', '?')}, {text.get('threads', '?')} thread(s)"
    if text.get("device") != "cpu":
        return f"trained on {text.get('device', '?')} ({made}): no cross-machine guarantee"
    kernels = (text.get("cpu_capability", "?"), text.get("mkl_branch", "?"))
    if text.get("mode") == "reproducible" and kernels == ("AVX2", "COMPATIBLE"):
        return f"reproducible: same bytes on any x86-64 CPU with AVX2 and FMA ({made})"
    return (
        f"{text.get('mode', '?')} mode (ATen {kernels[0]}, MKL {kernels[1]}; {made}): "
        "same bytes only on a CPU that picks the same kernels"
    )
