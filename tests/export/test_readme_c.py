"""The README's C section: the functions it names exist, and its Cortex-M numbers are the
committed table's."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

from _cexport import random_model
from committed import committed_text

from ncaflow.config import ModelConfig
from ncaflow.export import export_c

README = Path(__file__).parents[2] / "README.md"


def readme_c_section() -> str:
    text = README.read_text()
    return text.split("\n## C export\n", 1)[1].split("\n## ", 1)[0]


def test_readme_names_only_functions_the_headers_declare(tmp_path: Path) -> None:
    """Every nca_* function the README's C section names is declared by the header of a
    growing, a classification and a segmentation model (the program is EXAMPLE.md's,
    compiled and run by tests/export/test_report.py)."""
    named = set(re.findall(r"`(nca_[a-z_]+)`", readme_c_section()))
    assert {"nca_seed", "nca_run", "nca_rgba", "nca_classify", "nca_mask"} <= named
    models = {
        "growing": ModelConfig(output_channels=4, hidden_channels=4, hidden_width=16),
        "classification": ModelConfig(input_channels=1, output_channels=0, hidden_channels=4,
                                      hidden_width=16, head=3),
        "segmentation": ModelConfig(input_channels=3, output_channels=1, hidden_channels=4,
                                    hidden_width=16),
    }  # fmt: skip
    declared: set[str] = set()
    for task, cfg in models.items():
        header = export_c(random_model(cfg, seed=0), tmp_path / f"{task}.h", task=task)
        declared |= set(re.findall(r"\b(nca_[a-z_]+)\s*\(", header.path.read_text()))
    assert named <= declared, f"README names {sorted(named - declared)}, no header declares them"
    assert "src/ncaflow/export/EXAMPLE.md" in readme_c_section()


def test_cortex_m_table_is_the_scripts() -> None:
    """docs/microcontrollers.md's Cortex-M table is scripts/cortex_m.py's rendering of the JSON
    that the workflow target `cortex_m` wrote and that is committed, and the README's Kvasir
    figures (int8 RAM, agreement) are that table's."""
    root = README.parent
    spec = importlib.util.spec_from_file_location("cortex_m", root / "scripts" / "cortex_m.py")
    assert spec is not None and spec.loader is not None
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    doc = json.loads(committed_text("results/tables/cortex-m4.json"))
    table = script.table(doc)
    assert table in (root / "docs" / "microcontrollers.md").read_text()
    assert table + "\n" == committed_text("results/tables/cortex-m4.md")
    row = next(line for line in table.splitlines() if "Kvasir" in line and "| int8 |" in line)
    ram, agreement = (row.strip("|").split("|")[i].strip() for i in (3, 5))
    flat = " ".join(README.read_text().split())
    assert f"runs in {ram} of RAM" in flat
    assert f"{agreement.split(' of ')[0]} of its pixels agreeing" in flat
    kvasir = next(r for r in doc["rows"] if r["grid"] == "64x64" and r["state"] == "int8")
    digits = next(r for r in doc["rows"] if r["grid"] == "28x28" and r["state"] == "int8")
    assert kvasir["ram_total_bytes"] <= 64 * 1024 and digits["ram_total_bytes"] <= 64 * 1024
