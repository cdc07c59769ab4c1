"""Print the README's C-export footprint table from the JSON files `ncaflow export c` writes.

bash scripts/pretrained.sh reference
for m in growing selfclass breastmnist; do
    ncaflow export c results/models/ref_$m/base/fold0 --out exports/$m.h --int8
done
python scripts/footprint_table.py exports/*.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def kib(n: int) -> str:
    return f"{n / 1024:.1f} KiB"


def main(paths: list[str]) -> None:
    print(
        "| model | size | flash float32 | flash int8 | RAM | MACs / step | MACs / inference "
        "| int8 vs float |"
    )
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | --- |")
    for path in paths:
        doc = json.loads(Path(path).read_text())
        f, q = doc["footprint"], doc["int8_vs_float"]
        size = f"{f['height']}×{f['width']}, {f['steps']} steps"
        agree = f"{100 * q['agreement']:.1f} % agreement"
        print(
            f"| {Path(path).stem} | {size} | {kib(f['flash_float_bytes'])} "
            f"| {kib(f['flash_int8_bytes'])} | {kib(f['ram_total_bytes'])} "
            f"| {f['macs_per_step'] / 1e6:.1f} M | {f['macs_per_inference'] / 1e9:.2f} G "
            f"| {agree} |"
        )


if __name__ == "__main__":
    main(sys.argv[1:])
