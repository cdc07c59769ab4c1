"""Run an exported header on an emulated Cortex-M: build a bare-metal firmware with
``arm-none-eabi-gcc`` for an MPS2 board, run it in ``qemu-system-arm`` with semihosting
output, and measure flash and RAM (``arm-none-eabi-size``), the stack high-water mark and
the instructions per NCA step (QEMU ``-icount shift=0``: one instruction per virtual
nanosecond, read through the board's 25 MHz timer and calibrated against a loop of known
length). The same ``main.c`` builds for the host (``-DMCU_HOST``), so the two outputs can
be compared byte for byte.

Debian packages: gcc-arm-none-eabi, qemu-system-arm (the firmware needs no C library).
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np

from ncaflow.export.carrays import c_array
from ncaflow.export.errors import ExportError

__all__ = [
    "BOARDS",
    "PACKAGES",
    "TOOLS",
    "Board",
    "Firmware",
    "McuRun",
    "build",
    "build_host",
    "missing_tools",
    "run_host",
    "run_qemu",
]

PACKAGES = ("gcc-arm-none-eabi", "qemu-system-arm")
TOOLS = ("arm-none-eabi-gcc", "arm-none-eabi-size", "arm-none-eabi-nm", "qemu-system-arm")
# the same float operations on both sides: no fused multiply-add, no fast-math
CFLAGS = ("-std=c99", "-O2", "-ffp-contract=off", "-Wall", "-Wextra", "-Werror")
SPIN_INSTRUCTIONS = 2_000_000  # what mcu_spin(1000000) executes (subs + bne per turn)


@dataclass(frozen=True, kw_only=True)
class Board:
    machine: str  # qemu-system-arm -M
    cpu: str
    flags: tuple[str, ...]


BOARDS = {
    "m4": Board(
        machine="mps2-an386",
        cpu="Cortex-M4F",
        flags=("-mcpu=cortex-m4", "-mthumb", "-mfpu=fpv4-sp-d16", "-mfloat-abi=hard"),
    ),
    "m7": Board(
        machine="mps2-an500",
        cpu="Cortex-M7",
        flags=("-mcpu=cortex-m7", "-mthumb", "-mfpu=fpv5-d16", "-mfloat-abi=hard"),
    ),
}


@dataclass(frozen=True, kw_only=True)
class Firmware:
    elf: Path
    board: str
    text_bytes: int  # code + constants (weights, tables, the test image): flash
    data_bytes: int  # initialised data: flash and RAM
    bss_bytes: int  # zeroed data (state, scratch, readout buffers): RAM
    image_bytes: int = 0  # the input image baked into .text (a device reads a sensor instead)

    @property
    def flash_bytes(self) -> int:
        """text + data without the baked-in test image."""
        return self.text_bytes + self.data_bytes - self.image_bytes

    @property
    def ram_bytes(self) -> int:
        return self.data_bytes + self.bss_bytes


@dataclass(frozen=True, kw_only=True)
class McuRun:
    """What a firmware printed: hex blocks by tag ("state", "pred", "scores") and counters."""

    blocks: dict[str, bytes]
    step_ticks: list[int] = field(default_factory=list)
    spin_ticks: int = 0
    stack_bytes: int = 0

    @property
    def instructions_per_tick(self) -> float:
        return SPIN_INSTRUCTIONS / self.spin_ticks

    @property
    def instructions_per_step(self) -> float:
        """Mean over the steps (they differ only by which cells the PRNG fires)."""
        return float(np.mean(self.step_ticks)) * self.instructions_per_tick


def missing_tools() -> list[str]:
    return [t for t in TOOLS if shutil.which(t) is None]


def _sources(
    out_dir: Path, header: Path, image: np.ndarray | None, h: int, w: int, steps: int, seed: int
) -> Path:
    """Copy the firmware sources and ``header`` (as nca.h) into ``out_dir``; write input.h."""
    out_dir.mkdir(parents=True, exist_ok=True)
    src = resources.files("ncaflow.export").joinpath("cortexm")
    for name in ("main.c", "startup.c", "mcu.c", "mcu.h", "link.ld"):
        (out_dir / name).write_text(src.joinpath(name).read_text())
    shutil.copyfile(header, out_dir / "nca.h")
    lines = [
        f"#define MCU_H {h}",
        f"#define MCU_W {w}",
        f"#define MCU_STEPS {steps}",
        f"#define MCU_SEED {seed}u",
    ]
    if image is None or image.size == 0:
        lines.append("#define MCU_IMAGE 0")
    else:
        if image.shape[:2] != (h, w):
            raise ExportError(f"image of shape {image.shape}; expected ({h}, {w}, C_in)")
        lines += [
            c_array("float", "mcu_image", np.ascontiguousarray(image, np.float32)),
            "#define MCU_IMAGE mcu_image",
        ]
    (out_dir / "input.h").write_text("\n".join(lines) + "\n")
    return out_dir


def _run(cmd: list[str], timeout: float, cwd: Path | None = None, *, stderr: bool = False) -> str:
    """stdout of ``cmd`` (with stderr: both, QEMU writes the semihosting console there)."""
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=cwd)
    if res.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({res.returncode}):\n{res.stderr[-3000:]}")
    return res.stdout + (res.stderr if stderr else "")


def build(
    header: Path,
    out_dir: Path,
    *,
    image: np.ndarray | None,
    h: int,
    w: int,
    steps: int,
    seed: int = 1,
    board: str = "m4",
) -> Firmware:
    """Cross-compile the firmware for ``board`` ("m4" or "m7"); image (H, W, C_in) or None."""
    b = BOARDS[board]
    d = _sources(out_dir, header, image, h, w, steps, seed)
    elf = d / "firmware.elf"
    _run(
        [
            "arm-none-eabi-gcc",
            *CFLAGS,
            *b.flags,
            "-ffreestanding",
            "-fno-tree-loop-distribute-patterns",
            "-nostdlib",
            "-T",
            "link.ld",
            "main.c",
            "startup.c",
            "mcu.c",
            "-lgcc",
            "-o",
            str(elf),
        ],
        300,
        cwd=d,
    )
    text, data, bss = (
        int(v) for v in _run(["arm-none-eabi-size", str(elf)], 60).splitlines()[1].split()[:3]
    )
    image_bytes = 0
    for line in _run(["arm-none-eabi-nm", "--print-size", str(elf)], 60).splitlines():
        parts = line.split()
        if len(parts) == 4 and parts[3] == "mcu_image":
            image_bytes = int(parts[1], 16)
    return Firmware(
        elf=elf,
        board=board,
        text_bytes=text,
        data_bytes=data,
        bss_bytes=bss,
        image_bytes=image_bytes,
    )


def build_host(
    header: Path,
    out_dir: Path,
    *,
    image: np.ndarray | None,
    h: int,
    w: int,
    steps: int,
    seed: int = 1,
) -> Path:
    """The same program for the host (gcc), printing the same state and readout lines."""
    d = _sources(out_dir, header, image, h, w, steps, seed)
    exe = d / "host"
    _run(["gcc", *CFLAGS, "-DMCU_HOST", "main.c", "-o", str(exe)], 300, cwd=d)
    return exe


def parse(text: str) -> McuRun:
    """The hex lines of a run -> :class:`McuRun` (raises if the run did not reach "end")."""
    blocks: dict[str, bytearray] = {}
    ticks: list[int] = []
    spin = stack = 0
    lines = text.splitlines()
    if "end" not in lines:
        raise RuntimeError(f"the firmware did not finish; its output ends with {lines[-3:]}")
    for line in lines:
        if line == "end" or " " not in line:
            continue
        tag, hexa = line.split(" ", 1)
        raw = bytes.fromhex(hexa)
        if tag == "step":
            ticks.append(int.from_bytes(raw, "big"))
        elif tag == "spin":
            spin = int.from_bytes(raw, "big")
        elif tag == "stack":
            stack = int.from_bytes(raw, "big")
        else:
            blocks.setdefault(tag, bytearray()).extend(raw)
    return McuRun(
        blocks={k: bytes(v) for k, v in blocks.items()},
        step_ticks=ticks,
        spin_ticks=spin,
        stack_bytes=stack,
    )


def run_qemu(fw: Firmware, *, timeout: float = 600) -> McuRun:
    """Run ``fw`` in QEMU with semihosting and ``-icount shift=0``."""
    cmd = [
        "qemu-system-arm",
        "-M",
        BOARDS[fw.board].machine,
        "-nographic",
        "-monitor",
        "none",
        "-serial",
        "none",
        "-semihosting-config",
        "enable=on,target=native",
        "-icount",
        "shift=0",
        "-kernel",
        str(fw.elf),
    ]
    return parse(_run(cmd, timeout, stderr=True))


def run_host(exe: Path, *, timeout: float = 600) -> McuRun:
    return parse(_run([str(exe)], timeout))
