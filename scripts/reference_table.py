"""Print the README's reference-results table from docs/reference-h100/*/ (metrics + logs).

    python scripts/reference_table.py [FOLDER]

Each sub-folder holds what `scripts/reference_runs.sh` left for one run:
model.json (the full config), metrics.json (`ncaflow evaluate`) and train.log.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

ROWS = {  # metric key -> column label, per task
    "growing": [("test_mse", "MSE"), ("test_persistence_mse", "MSE after 1000 steps"),
                ("test_damaged_mse", "MSE damaged"), ("test_regrowth_mse", "MSE regrown")],
    "selfclass": [("test_acc", "test accuracy (vote)"), ("test_pixel_acc", "pixel accuracy")],
    "classification": [("test_acc", "test ACC"), ("test_auc", "test AUC"), ("test_f1", "F1")],
    "segmentation": [("test_dice", "test Dice"), ("test_iou", "IoU")],
}  # fmt: skip


def main(folder: Path) -> None:
    print("| run | task | parameters | results | training |")
    print("| --- | --- | ---: | --- | --- |")
    for run in sorted(p for p in folder.iterdir() if (p / "metrics.json").exists()):
        metrics = json.loads((run / "metrics.json").read_text())
        config = json.loads((run / "model.json").read_text())["config"]
        log = (run / "train.log").read_text()
        found = re.search(r"for (\d+) iterations in (\d+) s", log)
        trained = f"{found[1]} it, {found[2]} s" if found else "?"
        cells = ", ".join(f"{label} {metrics[key]:.4g}" for key, label in ROWS[config["task"]])
        print(
            f"| {run.name} | {config['task']} | {metrics['parameters']:,} | {cells} | {trained} |"
        )


if __name__ == "__main__":
    main(
        Path(sys.argv[1])
        if len(sys.argv) > 1
        else Path(__file__).parents[1] / "docs" / "reference-h100"
    )
