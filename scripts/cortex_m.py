"""Measure pretrained models on an emulated Cortex-M4 (QEMU mps2-an386) and write the JSON
behind the Cortex-M table of docs/microcontrollers.md; `--table JSON` prints that table.

    snakemake --cores all cortex_m             # the workflow target: the default config's best
                                               # Kvasir and BreastMNIST models -> results/tables/
    python scripts/cortex_m.py --out M4.json --segmenter MODEL --classifier MODEL
    python scripts/cortex_m.py --table M4.json

For each model and state (float32; int8, calibrated on the model's validation images) the
header is exported, built as firmware (ncaflow.export.cortexm) with one image baked in, run
in QEMU, and its prediction compared with PyTorch's float model given the same fire masks
(the header's PRNG, ncaflow.export.c_fire_masks). The first image also runs as a host build,
which must print the same bytes. Needs gcc-arm-none-eabi and qemu-system-arm.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

from ncaflow.export import c_fire_masks, cortexm, export_c, model_spec, predict
from ncaflow.export.readouts import emitter
from ncaflow.export.report import data_seeds
from ncaflow.guard.io import load

# (label, grid, images compared) of the segmenter and the classifier: the test split first,
# then training images
MODELS = [
    ("Kvasir-SEG segmentation", (64, 64), 4),
    ("BreastMNIST classifier", (28, 28), 8),
]
SEED = 1  # the header's PRNG seed: the fire masks of every run


def _images(model: Any, spec: Any, size: tuple[int, int], n: int) -> torch.Tensor:
    seeds = data_seeds(model, spec, "test", size, n)
    if seeds.shape[0] < n:  # Kvasir's mirror holds 5 pairs: 1 test image
        seeds = torch.cat([seeds, data_seeds(model, spec, "train", size, n - seeds.shape[0])])
    return seeds


def measure(label: str, path: str, size: tuple[int, int], n: int, work: Path) -> list[dict]:
    model = load(path)
    spec = model_spec(model)
    steps = int(model.run_config.train.steps[-1])
    h, w = size
    images = _images(model, spec, size, n)
    masks = c_fire_masks(SEED, steps, h, w, spec.config.fire_rate)
    with torch.no_grad():
        ref = predict(
            spec, model(images, steps, fire_masks=masks.expand(-1, len(images), -1, -1, -1))
        )
    readout = emitter(spec.readout)
    rows = []
    for state in ("int8", "float"):
        calib = data_seeds(model, spec, "val", size, 8) if state == "int8" else None
        header = export_c(
            model, work / f"{state}.h", state=state, calibration=calib, steps=steps
        ).path
        agree, fw, runs = [], None, []
        for i in range(len(images)):
            image = images[i, : spec.config.input_channels].permute(1, 2, 0).numpy()
            d = work / f"{state}-{i}"
            fw = cortexm.build(header, d, image=image, h=h, w=w, steps=steps, seed=SEED)
            run = cortexm.run_qemu(fw, timeout=900)
            if i == 0:
                host = cortexm.build_host(
                    header, d / "host", image=image, h=h, w=w, steps=steps, seed=SEED
                )
                if cortexm.run_host(host).blocks != run.blocks:
                    raise SystemExit(
                        f"{label} {state}: the Cortex-M output differs from the host's"
                    )
            if readout.classes:  # the class index, as an int32
                got_cls = int.from_bytes(run.blocks["pred"], "big")
                agree.append(float(got_cls == int(ref[i])))
            else:  # the mask, one byte per pixel
                got = torch.frombuffer(bytearray(run.blocks["pred"]), dtype=torch.uint8) > 0
                agree.append(readout.agreement(got.view(1, h, w), ref[i : i + 1]))
            runs.append(run)
        assert fw is not None
        rows.append(
            {
                "task": label,
                "model": path,
                "grid": f"{h}x{w}",
                "steps": steps,
                "state": state,
                "board": cortexm.BOARDS["m4"].machine,
                "flash_bytes": fw.flash_bytes,
                "ram_bytes": fw.ram_bytes,  # .data + .bss: state, saved rows, readout buffer
                "stack_bytes": max(r.stack_bytes for r in runs),
                "ram_total_bytes": fw.ram_bytes + max(r.stack_bytes for r in runs),
                "instructions_per_step": sum(r.instructions_per_step for r in runs) / len(runs),
                "agreement": sum(agree) / len(agree),
                "agreement_unit": "image" if readout.classes else readout.unit,
                "images": len(images),
                "host_build_equal": True,
            }
        )
        print(json.dumps(rows[-1]), file=sys.stderr)
    return rows


def _version(cmd: list[str]) -> str:
    return subprocess.run(cmd, capture_output=True, text=True).stdout.splitlines()[0]


def table(doc: dict) -> str:
    """The Markdown table of docs/microcontrollers.md."""
    out = [
        "| task | state | flash | RAM | instructions / step | agreement with PyTorch |",
        "| --- | --- | ---: | ---: | ---: | --- |",
    ]
    for r in doc["rows"]:
        unit = "pixels" if r["agreement_unit"] == "pixel" else "images"
        out.append(
            f"| {r['task']}, {r['grid'].replace('x', ' × ')}, {r['steps']} steps "
            f"| {'int8' if r['state'] == 'int8' else 'float32'} "
            f"| {r['flash_bytes'] / 1024:.1f} KiB | {r['ram_total_bytes'] / 1024:.1f} KiB "
            f"| {r['instructions_per_step'] / 1e6:.1f} M "
            f"| {100 * r['agreement']:.1f} % of {unit} ({r['images']} images) |"
        )
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", help="JSON to write (measure)")
    ap.add_argument("--table", help="print the docs/microcontrollers.md table of this JSON")
    ap.add_argument("--segmenter", help="a Kvasir-SEG model folder (measure)")
    ap.add_argument("--classifier", help="a BreastMNIST model folder (measure)")
    args = ap.parse_args()
    if args.table:
        print(table(json.loads(Path(args.table).read_text())))
        return
    if not (args.out and args.segmenter and args.classifier):
        ap.error("give --out JSON --segmenter MODEL --classifier MODEL (measure) or --table JSON")
    missing = cortexm.missing_tools()
    if missing:
        raise SystemExit(
            f"cortex_m.py: {', '.join(missing)} missing: apt-get install "
            f"{' '.join(cortexm.PACKAGES)}"
        )
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        paths = (args.segmenter, args.classifier)
        for i, ((label, size, n), path) in enumerate(zip(MODELS, paths, strict=True)):
            work = Path(tmp) / str(i)
            work.mkdir()
            rows += measure(label, path, size, n, work)
    doc = {
        "machine": "QEMU mps2-an386 (Cortex-M4F), -icount shift=0; instructions from the "
        "25 MHz timer, calibrated against a loop of 2,000,000 instructions",
        "qemu": _version(["qemu-system-arm", "--version"]),
        "gcc": _version(["arm-none-eabi-gcc", "--version"]),
        "cflags": " ".join([*cortexm.CFLAGS, *cortexm.BOARDS["m4"].flags]),
        "rows": rows,
    }
    Path(args.out).write_text(json.dumps(doc, indent=2) + "\n")
    print(table(doc))


if __name__ == "__main__":
    main()
