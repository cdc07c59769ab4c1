"""The README's result tables quote the workflow's tables, not hand-typed numbers.

Every claim below is a (text in the README, table written by a workflow target, row, column)
quadruple: the test renders the table's value the way the README shows it and asserts the
README says exactly that. Committing retrained tables, or editing either side alone, fails
it; a user's own run of the main job, which rewrites results/tables/ in the working tree,
does not (the tables are read as committed: tests/committed.py).
"""

from __future__ import annotations

import csv
import io
import statistics
from collections.abc import Callable
from pathlib import Path

import pytest
from committed import committed_text

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def _rows(table: str) -> list[dict[str, str]]:
    """A workflow table as committed: the README quotes these, whatever the user's own run
    of the main job wrote into results/tables since (tests/committed.py)."""
    return list(csv.DictReader(io.StringIO(committed_text(f"results/tables/{table}"))))


def best(table: str) -> dict[str, str]:
    """The aggregate table's best cell (chosen on validation by the aggregate rule)."""
    (row,) = [r for r in _rows(table) if r["best"] == "True"]
    return row


def keyed(table: str, **match: str) -> dict[str, str]:
    (row,) = [r for r in _rows(table) if all(r[k] == v for k, v in match.items())]
    return row


def pm(digits: int) -> Callable[[dict[str, str], str], str]:
    """'mean ± std' of column <name>_mean / <name>_std to the given decimals."""
    return lambda row, name: (
        f"{float(row[name + '_mean']):.{digits}f} ± {float(row[name + '_std']):.{digits}f}"
    )


def fixed(digits: int) -> Callable[[dict[str, str], str], str]:
    return lambda row, name: f"{float(row[name]):.{digits}f}"


def sci(digits: int) -> Callable[[dict[str, str], str], str]:
    """3.8e-4 rather than Python's 3.8e-04."""

    def render(row: dict[str, str], name: str) -> str:
        mantissa, exponent = f"{float(row[name]):.{digits}e}".split("e")
        return f"{mantissa}e{int(exponent)}"

    return render


def thousands(row: dict[str, str], name: str) -> str:
    return f"{int(row[name]):,}"


GROWING, SELFCLASS = best("growing.csv"), best("selfclass.csv")
BREAST, KVASIR = best("breastmnist.csv"), best("kvasir.csv")
ENSEMBLE = keyed("reference/ensembles.csv", ensemble="big_long_6k_s0s1")
SINGLE = best("sweep_breastmnist_long.csv")
LIZARD = keyed("reference/runs.csv", run="ref_growing")
DIGITS = keyed("reference/runs.csv", run="ref_selfclass")

# (README text with {} for the value, row, column, rendering)
CLAIMS = [
    # the main job (config/config.yaml, target tables)
    (
        "| growing (`results/tables/growing.md`) | hidden 12 | {} |",
        GROWING,
        "parameters",
        thousands,
    ),
    ("MSE {}; regrows", GROWING, "test_mse", pm(4)),
    ("regrows a cut ({} →", GROWING, "test_damaged_mse_mean", fixed(4)),
    ("→ {}) |", GROWING, "test_regrowth_mse_mean", fixed(4)),
    ("| selfclass | fire rate 1.0 | {} |", SELFCLASS, "parameters", thousands),
    ("accuracy {} |", SELFCLASS, "test_acc", pm(3)),
    ("| breastmnist | width 48 | {} |", BREAST, "parameters", thousands),
    ("ACC {} (majority class", BREAST, "test_acc", pm(3)),
    ("AUC {} |", BREAST, "test_auc", pm(3)),
    ("on this CPU ({}), a bar", BREAST, "val_auc", pm(3)),
    ("| kvasir | hidden 8 | {} |", KVASIR, "parameters", thousands),
    ("Dice {} (five mirror images", KVASIR, "test_dice", pm(2)),
    # the reference results (config/paper.yaml, target reference)
    ("ensemble of two NCAs | {} |", ENSEMBLE, "parameters", thousands),
    ("test ACC {}, AUC", ENSEMBLE, "test_acc", pm(3)),
    ("AUC {} (3 evaluation seeds)", ENSEMBLE, "test_auc", pm(3)),
    ("best single NCA by validation | {} |", SINGLE, "parameters", thousands),
    ("test ACC {}, AUC", SINGLE, "test_acc", pm(3)),
    ("AUC {} (3 seeds)", SINGLE, "test_auc", pm(3)),
    ("| growing lizard | {} |", LIZARD, "parameters", thousands),
    ("MSE {} at 96 steps", LIZARD, "test_mse", sci(1)),
    ("{} after 1,000 steps", LIZARD, "test_persistence_mse", sci(1)),
    ("circular cut ({} →", LIZARD, "test_damaged_mse", sci(1)),
    ("→ {})", LIZARD, "test_regrowth_mse", sci(1)),
    ("| self-classifying MNIST | {} |", DIGITS, "parameters", thousands),
    ("test accuracy {} (per-pixel vote)", DIGITS, "test_acc", fixed(3)),
    ("pixel accuracy {} |", DIGITS, "test_pixel_acc", fixed(3)),
]


@pytest.mark.parametrize(
    ("text", "row", "column", "render"), CLAIMS, ids=[c[0].strip("| ") for c in CLAIMS]
)
def test_readme_quotes_the_workflow_tables(
    text: str, row: dict[str, str], column: str, render: Callable[[dict[str, str], str], str]
) -> None:
    claim = text.format(render(row, column))
    assert claim in README, f"README.md should say {claim!r} (from the workflow's table)"


def test_the_claims_cover_every_result_row() -> None:
    """Each row of the README's two result tables is checked above (a new row needs claims)."""
    section = README.split("## Results", 1)[1].split("## Your own data", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ") and "---" not in line]
    body = [r for r in rows if not r.startswith(("| task |",))]
    assert len(body) == 8
    # each row's first cells, from the claims anchored on a whole cell ("... | {} |")
    anchors = [c[0].split("| {} |")[0].strip("| ") for c in CLAIMS if "| {} |" in c[0]]
    for line in body:
        assert sum(anchor in line for anchor in anchors) == 1, line


# -- the performance table: benchmarks/run.py and scripts/gpu_check.sh records --------------

RECORDS = ROOT / "benchmarks" / "reference"


def _bench(name: str) -> dict[tuple[str, str, str], dict[str, float]]:
    import json

    rows = json.loads((RECORDS / name).read_text())["rows"]
    return {(r["impl"], r["mode"], r["state"]): r for r in rows}


def _span(values: list[float], digits: int) -> str:
    low, high = f"{min(values):.{digits}f}", f"{max(values):.{digits}f}"
    return low if low == high else f"{low}–{high}"


def test_readme_performance_quotes_the_benchmark_records() -> None:
    """The CPU row ranges span the two recorded peer runs; the GPU rows quote one H100 run with
    both peers."""
    cpu = [_bench("cpu-20261203-peers.json"), _bench("cpu-20261203-peers-2.json")]

    def ratio(run: dict, peer: str, mode: str) -> float:  # type: ignore[type-arg]
        return run[(peer, mode, "grown")]["seconds"] / run[("ncaflow", mode, "grown")]["seconds"]

    def speed(peer: str, mode: str, digits: int) -> str:
        return _span([ratio(run, peer, mode) for run in cpu], digits)

    memory = _span([run[("ncaflow", "train", "grown")]["memory_vs_baseline"] for run in cpu], 2)
    train = (
        f"| CPU training (2 cores) | {speed('baseline', 'train', 1)}x faster, {memory}x the "
        f"memory | {speed('ncalab', 'train', 1)}x | {speed('cax', 'train', 0)}x |"
    )
    infer = (
        f"| CPU inference | {speed('baseline', 'infer', 0)}x | {speed('ncalab', 'infer', 1)}x "
        f"| {speed('cax', 'infer', 1)}x |"
    )
    import json

    record = json.loads((RECORDS / "cuda-20261207-h100-peers.json").read_text())["rows"]
    gpu = {(r["impl"], r["mode"], r["batch"]): r for r in record if r["state"] == "grown"}

    def than(peer: str, mode: str, batch: int) -> str:
        ours, other = gpu[("graph-fused", mode, batch)], gpu[(peer, mode, batch)]
        text = f"{other['seconds'] / ours['seconds']:.1f}x"
        if peer == "baseline":  # the first column also gives our rate
            rate = ours["iterations_per_s"] if batch == 8 else ours["cell_steps_per_s"]
            text += f" ({rate:.0f} iterations/s)" if batch == 8 else f" ({rate:.2e} cell-steps/s)"
        if mode == "train":
            text += f", {ours['memory_mb'] / other['memory_mb']:.2f}x the memory"
        return text.replace("e+09", "e9")

    rows = [
        f"| {label} | " + " | ".join(than(p, mode, b) for p in ("baseline", "ncalab", "cax")) + " |"
        for mode, b, label in (
            ("train", 8, "GPU training, batch 8 (one H100)"),
            ("train", 256, "GPU training, batch 256"),
            ("infer", 8, "GPU inference, batch 8"),
            ("infer", 256, "GPU inference, batch 256"),
        )
    ]
    for line in (train, infer, *rows):
        assert line in README, f"README.md should have the row {line!r} (from the records)"


def test_readme_grid_numbers_quote_the_grid_records() -> None:
    """The GPU-packing paragraph's numbers are the H100 records': the full-length together
    run and the projection from it."""
    import json

    def record(name: str) -> dict:
        return json.loads((RECORDS / name).read_text())

    full = record("grid-together-full-20261207-h100.json")
    proj = record("projection-paper-together-20261207-h100.json")
    assert proj["gain"] == "measured" and proj["packing"] == full["speedup"]
    busy = f"{full['gpu_util_mean']:.0%}".replace("%", " %")
    quoted = [
        f"the {full['jobs']} BreastMNIST paper-grid jobs at full length",
        f"ran {full['jobs_per_hour']:,.0f} jobs per hour against "
        f"{full['baseline_jobs_per_hour']:.0f} one at a time ({full['speedup']:.1f}x), "
        f"the GPU {busy} busy",
        f"about {proj['fixed_s_per_job']:.0f} s starting",
        f"{proj['jobs']} training jobs take {proj['one_gpu_one_at_a_time_h']:.1f} H100-hours",
        f"{proj['one_gpu_packed_h'] * 60:.0f} minutes packed together on one GPU, "
        f"{proj['gpus']['8'] * 60:.0f} minutes on eight",
    ]
    flat = " ".join(README.split())
    for text in quoted:
        assert text in flat, f"README.md should say {text!r} (from the records)"


def test_full_length_together_run_trained_every_job() -> None:
    """The full-length record: 40 real paper-grid jobs (no iteration override), 8 processes of
    5 folds, none failed, and the jobs also run alone are the same bytes packed."""
    import json

    full = json.loads((RECORDS / "grid-together-full-20261207-h100.json").read_text())
    packed, alone = full["packed"], full["baseline"]
    assert full["iterations"] == 0 and full["together"] and full["mps"]
    assert packed["processes"] == 8 and packed["failed"] == [] and full["jobs"] == 40
    shas = {j["name"]: j["sha256"] for j in packed["per_job"]}
    assert alone["per_job"] and all(shas[j["name"]] == j["sha256"] for j in alone["per_job"])


def test_readme_quotes_the_folds_together_record() -> None:
    """The 300-iteration together run's 40 models are the bytes of the earlier lease's packed
    run of the same jobs (one process each)."""
    import json

    together = json.loads((RECORDS / "grid-together-20261207-h100.json").read_text())
    grid = json.loads((RECORDS / "grid-20261207-h100.json").read_text())
    assert together["together"] and together["packed"]["processes"] == 8
    assert together["packed"]["failed"] == []
    before = {j["name"]: j["sha256"] for j in grid["packed"]["per_job"]}
    now = {j["name"]: j["sha256"] for j in together["packed"]["per_job"]}
    assert len(now) == 40 and now == before


def test_readme_task_ratios_come_from_the_records() -> None:
    """The image tasks' batch-256 ratios to the kernel's cell-step rate: one H100 run's record
    (tasks.py's ratio_to_kernel, the kernel measured in the same run)."""
    import json

    def at_256(name: str) -> dict[str, dict]:
        record = json.loads((RECORDS / name).read_text())
        return {r["config"]: r for r in record["rows"] if r["batch"] == 256}

    now = {
        task: r["ratio_to_kernel"]
        for task, r in at_256("tasks-20261207-h100-int32-stride.json").items()
    }
    text = " ".join(README.split())
    low, high = sorted((now["kvasir"], now["growing"]))
    assert f"reach {low:.2f}-{high:.2f} of the growing kernel's" in text
    assert f"and {now['selfclass']:.2f} and {now['breastmnist']:.2f} of it" in text


def test_readme_quotes_the_ablation_table() -> None:
    """The options paragraph's base AUC is docs/ablation.md's (target `ablation`)."""
    table = (ROOT / "docs" / "ablation.md").read_text()
    base = next(
        line for line in table.splitlines() if line.startswith("| ablation_breastmnist | base |")
    )
    test_auc = (
        base.strip("|").split("|")[7].strip()
    )  # task, option, n, parameters, val x2, test_acc
    assert f"(test AUC {test_auc})" in README


# -- the bad-input corpus (README's count, docs/bad-input.md's table): what pytest collects ----

CORPUS = {  # docs/bad-input.md row -> the corpus file
    "model files": "test_model_files.py",
    "run configs and `--set`": "test_config.py",
    "data files and folders": "test_data.py",
    "training and checkpoints": "test_training.py",
    "command lines": "test_cli.py",
    "workflow configs": "test_workflow_inputs.py",
}


def test_readme_counts_the_bad_input_corpus() -> None:
    import subprocess
    import sys

    listing = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
         str(ROOT / "tests" / "robustness")],
        capture_output=True, text=True, check=True, cwd=ROOT,
    ).stdout  # fmt: skip
    cases = [line for line in listing.splitlines() if "::" in line]
    section = README.split("### Bad input", 1)[1].split("\n## ", 1)[0]
    assert f"a corpus of {len(cases)} bad inputs" in section
    doc = (ROOT / "docs" / "bad-input.md").read_text()  # the table, a row per corpus file
    rows = [line for line in doc.splitlines() if line.startswith("| ") and "---" not in line]
    assert len(rows) - 1 == len(CORPUS)  # the header, then one row per file
    for row in rows[1:]:
        cells = [c.strip() for c in row.strip("|").split("|")]
        (name,) = [k for k in CORPUS if cells[0].startswith(k)]
        count = sum(1 for c in cases if f"robustness/{CORPUS[name]}::" in c)
        assert cells[1] == str(count), f"table row {name!r}: {cells[1]} cases, pytest has {count}"


def test_readme_main_job_time_is_the_recorded_run() -> None:
    """The main job's wall time is Snakemake's elapsed time of the recorded --forceall run, and
    its training jobs are the config's eight (two folds of four tasks)."""
    import json

    run = json.loads((RECORDS / "main-job-longest-first-20261207" / "run.json").read_text())
    minutes, seconds = divmod(int(run["snakemake_elapsed_s"]), 60)
    assert f"From scratch it took {minutes} min {seconds} s on this" in " ".join(README.split())
    assert len(run["train_job_seconds"]) == 8


def test_readme_names_the_breastmnist_cell_of_the_config() -> None:
    """The main job's paragraph describes config/config.yaml's BreastMNIST cell as it is."""
    import yaml

    task = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())["tasks"]["medmnist"]
    cell, (width,) = task["set"], task["grid"]["width"]["values"]
    assert task["grid"]["width"]["key"] == "model.hidden_width"
    said = (
        f"{cell['model.hidden_channels']} hidden channels, width {width}, fire rate "
        f"{cell['model.fire_rate']}, {cell['train.iterations']:,} iterations"
    )
    assert said in " ".join(README.split())
    assert f"learning rate {cell['train.lr']:.0e}".replace("e-0", "e-") in " ".join(README.split())


def test_readme_counts_the_recipe_search() -> None:
    """The main job's paragraph counts the BreastMNIST recipe variants of the search records
    (benchmarks/recipes.py summaries); benchmarks/README's account of the longer run tried
    before quotes that search and the run's record."""
    import json

    variants: dict[str, dict] = {}
    for path in sorted(RECORDS.glob("recipes-breastmnist*-20261207-h100.json")):
        if "-run-" not in path.name:
            variants |= json.loads(path.read_text())["variants"]
    seeds = {len(v["seeds"]) for v in variants.values()}
    flat = " ".join(README.split())
    assert f"search of {len(variants)} recipe variants ({seeds.pop()} seeds each" in flat
    assert not seeds
    # benchmarks/README: the narrower cell before reached validation AUC 0.85 only from 5,400
    # iterations, and the main job trained so (its tables kept in the record) did no better
    assert variants["base_5400"]["best_mean"] >= 0.85 > variants["base_3600"]["best_mean"]
    base = variants["base_5400"]
    notes = " ".join((ROOT / "benchmarks" / "README.md").read_text().split())
    assert f"(the search's {base['best_mean']:.3f} ± {base['best_std']:.3f}, last value" in notes
    tried = RECORDS / "main-job-breast5400-selfclass1200-20261207"
    assert "5400" in json.loads((tried / "run.json").read_text())["what"].split(";")[0]
    rows = list(csv.DictReader((tried / "breastmnist_folds.csv").open()))
    test = [float(r["test_auc"]) for r in rows]
    assert len(rows) == 2
    said = f"test AUC came out **{statistics.mean(test):.3f} ± {statistics.stdev(test):.3f}**"
    assert said in notes
