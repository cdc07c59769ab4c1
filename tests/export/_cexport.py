"""Helpers for the C export tests: random-weight models, compiling and running the driver."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from ncaflow.config import ModelConfig, RunConfig
from ncaflow.export import ModelSpec
from ncaflow.model.cascade import build_model

DRIVER = Path(__file__).with_name("driver.c")
DRIVER_COMPACT = Path(__file__).with_name("driver_compact.c")  # --state int8 headers
CFLAGS = ["-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic"]
SANITIZE = [
    "-fsanitize=address,undefined",
    "-fno-sanitize-recover=all",
    "-fno-omit-frame-pointer",
    "-g",
]


def random_model(config: ModelConfig, *, seed: int) -> nn.Module:
    """The model ``build_model`` makes for ``config`` (with ``head`` when config.head > 0),
    with non-zero random weights so that the dynamics do something."""
    torch.manual_seed(seed)
    task = "classification" if config.head else "growing"
    model = build_model(RunConfig(task=task, model=config))
    with torch.no_grad():
        nn.init.normal_(model.fc2.weight, std=0.1)
        nn.init.normal_(model.fc1.bias, std=0.1)
        if config.head:
            layers = [m for m in model.head.modules() if isinstance(m, nn.Linear)]
            for layer in layers:  # one, or an MLP head's two (model.head_hidden)
                nn.init.normal_(layer.weight, std=1.0)
            # random NCAs give nearly image-independent mean states, so without a spread in
            # the bias every class ties within int8 noise; trained heads have real margins
            nn.init.normal_(layers[-1].bias, std=0.3)
    return model.eval()


def images(n: int, c: int, h: int, w: int, *, seed: int) -> Tensor:
    """(n, c, h, w) blobs in [0, 1] with background 0 (like digits)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, c, h, w, generator=g)
    return x * (torch.rand(n, 1, h, w, generator=g) > 0.4)


def fire_masks(steps: int, n: int, h: int, w: int, rate: float, *, seed: int) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(steps, n, 1, h, w, generator=g) < rate).float()


def compile_driver(
    header: Path, out: Path, *, flags: list[str] | None = None, driver: Path = DRIVER
) -> Path:
    """Compile ``driver`` against ``header`` (copied to nca.h next to it) into ``out``."""
    inc = out.parent / f"{out.name}.inc"
    inc.mkdir(parents=True, exist_ok=True)
    shutil.copy(header, inc / "nca.h")
    cmd = ["gcc", *CFLAGS, *(flags or ["-O2"]), f"-I{inc}", str(driver), "-o", str(out)]
    res = subprocess.run(cmd, capture_output=True, text=True)
    assert res.returncode == 0, f"{' '.join(cmd)}\n{res.stderr}"
    return out


@dataclass
class CResult:
    states: Tensor  # (B, C, H, W) float32, or int8 codes (compact drivers)
    pred: Tensor  # (B,) class, (B, H, W) bool mask, or (B, 4, H, W) rgba
    scores: Tensor | None = None  # (B, K) vote counts or head logits
    stdout: str = ""  # adaptive headers: the steps each item ran, one line each


def run_driver(
    exe: Path,
    spec: ModelSpec,
    *,
    tmp: Path,
    n: int,
    h: int,
    w: int,
    steps: int,
    image: Tensor | None = None,
    masks: Tensor | None = None,
    rng_seed: int = -1,
    wrapper: list[str] | None = None,
    compact: bool = False,
) -> CResult:
    """Run the compiled driver; image (B, C_in, H, W), masks (steps, B, 1, H, W) 0/1;
    compact: driver_compact.c's output (int8 codes of the state)."""
    img_path, mask_path, out_path = tmp / "images.bin", tmp / "masks.bin", tmp / "out.bin"
    if image is not None:
        image.permute(0, 2, 3, 1).contiguous().numpy().astype(np.float32).tofile(img_path)
    if masks is not None:
        masks[:, :, 0].permute(1, 0, 2, 3).contiguous().numpy().astype(np.uint8).tofile(mask_path)
    args = [
        str(img_path) if image is not None else "-",
        str(mask_path) if masks is not None else "-",
    ]
    cmd = [
        *(wrapper or []),
        str(exe),
        *args,
        str(out_path),
        str(n),
        str(h),
        str(w),
        str(steps),
        str(rng_seed),
    ]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, f"{' '.join(cmd)} failed ({res.returncode}):\n{res.stderr[-4000:]}"
    raw = out_path.read_bytes()
    c, cells = spec.config.channels, h * w
    states, preds, scores = [], [], []
    pos = 0
    for _ in range(n):
        st = np.frombuffer(raw, np.int8 if compact else np.float32, cells * c, pos)
        pos += cells * c * (1 if compact else 4)
        states.append(torch.from_numpy(st.copy()).view(h, w, c).permute(2, 0, 1))
        if spec.readout == "rgba":
            rgba = np.frombuffer(raw, np.float32, cells * 4, pos)
            pos += cells * 16
            preds.append(torch.from_numpy(rgba.copy()).view(h, w, 4).permute(2, 0, 1))
        elif spec.readout == "mask":
            preds.append(
                torch.from_numpy(np.frombuffer(raw, np.uint8, cells, pos).copy() > 0).view(h, w)
            )
            pos += cells
        else:
            preds.append(torch.tensor(int(np.frombuffer(raw, np.int32, 1, pos)[0])))
            k = spec.n_classes
            scores.append(torch.from_numpy(np.frombuffer(raw, np.float32, k, pos + 4).copy()))
            pos += 4 + 4 * k
    assert pos == len(raw), "driver output has an unexpected size"
    return CResult(
        states=torch.stack(states),
        pred=torch.stack(preds),
        scores=torch.stack(scores) if scores else None,
        stdout=res.stdout,
    )
