"""The README's C example compiles and runs verbatim against an exported header."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from _cexport import CFLAGS, random_model
from committed import committed_text

from ncaflow.config import ModelConfig
from ncaflow.export import export_c

README = Path(__file__).parents[2] / "README.md"


def readme_c_block() -> tuple[str, str]:
    """(the C program, the build command) of the README's "C export" section."""
    text = README.read_text()
    section = text.split("\n## C export\n", 1)[1].split("\n## ", 1)[0]
    code = re.search(r"```c\n(.*?)```", section, re.S)
    build = re.search(r"`(gcc [^`]*main\.c)`", section)
    assert code is not None, "README: no ```c block in the C export section"
    assert build is not None, "README: the C export section names no gcc command"
    return code.group(1), build.group(1)


@pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc not installed")
def test_readme_c_example_compiles_and_runs(tmp_path: Path) -> None:
    code, build = readme_c_block()
    header = re.search(r'#include "(\w+\.h)"', code)
    assert header is not None
    cfg = ModelConfig(output_channels=4, hidden_channels=4, hidden_width=16, alive_channel=3)
    export_c(random_model(cfg, seed=0), tmp_path / header.group(1), task="growing", steps=3)
    (tmp_path / "main.c").write_text(code)
    # the README's command, with the project's warnings-as-errors flags on top
    command = [*build.split(), *CFLAGS, "-o", "main"]
    res = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    run = subprocess.run([str(tmp_path / "main")], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    alpha = re.fullmatch(r"alpha at the centre: (-?\d+\.\d+)\n", run.stdout)
    assert alpha is not None, run.stdout
    assert 0.0 <= float(alpha.group(1)) <= 1.0


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
