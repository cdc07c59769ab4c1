"""benchmarks/: the yardstick computes what ncaflow computes, and the runner runs.

The README's speed ratios are only honest if the eager baseline is the same function
as ncaflow's NCA (same weights, same fire masks, same alive masking), and they are
only reproducible if `benchmarks/run.py` still runs. Timings themselves are never
asserted.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

import protocol  # noqa: E402
from worker import build  # noqa: E402


@pytest.mark.parametrize("state", ["seed", "grown"])
def test_baseline_is_the_same_function_as_ncaflow(state: str) -> None:
    """The baseline and every CPU implementation start from the same weights and give the
    same rollout and gradients from equally seeded generators."""
    cpu = torch.device("cpu")
    x = torch.from_numpy(protocol.seed_state(state, 2, 16))
    outs, grads = [], []
    for impl in ("baseline", "reference", "ncaflow"):
        model = build(impl, cpu)
        with torch.no_grad():  # updates large enough that cells come alive and die
            model.fc2.weight.mul_(30.0)
        y = model(x, 8, generator=torch.Generator().manual_seed(5))
        outs.append(y)
        grads.append(torch.autograd.grad(y[:, :4].square().mean(), [model.fc1.weight]))
    assert outs[0][:, 3].gt(0.1).any()  # something is alive, so the comparison means something
    for y, g in zip(outs[1:], grads[1:], strict=True):
        torch.testing.assert_close(y, outs[0], rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(g[0], grads[0][0], rtol=1e-3, atol=1e-5)


def test_runner_prints_the_table_and_writes_json(tmp_path: Path) -> None:
    """`run.py` end to end on a tiny case: one worker process per case, ratios against the
    baseline, a JSON with one row per case."""
    cmd = [
        sys.executable, str(REPO / "benchmarks" / "run.py"),
        "--rounds", "1", "--iters", "1", "--size", "12", "--steps", "3", "--threads", "1",
        "--modes", "train", "--states", "grown", "--impls", "baseline", "ncaflow",
        "--no-startup", "--out", str(tmp_path),
    ]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "| train | grown | 8 | ncaflow |" in done.stdout
    (path,) = tmp_path.glob("cpu-*.json")
    rows = json.loads(path.read_text())["rows"]
    assert [r["impl"] for r in rows] == ["baseline", "ncaflow"]
    assert all(r["seconds"] > 0 and r["cell_steps_per_s"] > 0 for r in rows)
    assert rows[0]["speed_vs_baseline"] == 1.0


# channels-first (before), channels-last, the two earlier channels-last calls the README cites
# (alive mask by max_pool2d; Inductor's defaults), the step with the training limits, the
# reverted kernels with the fixed filters inside (-stencil), and the grown and full states
# before and after the fused MLP skipped the rows that cannot matter (-nokeep, -keep)
PROFILES = [
    f"b{batch}-20261202-h200{layout}"
    for batch in (8, 256)
    for layout in ("", "-cl", "-cl-maxpool", "-cl-defaults", "-cl-maxpool-limits", "-stencil")
] + [
    "b8-grown-20261202-h200-nokeep",
    "b8-grown-20261202-h200-keep",
    "b256-grown-20261202-h200-nokeep",
    "b256-grown-20261202-h200-keep",
    "b256-full-20261202-h200-keep",
]


@pytest.mark.parametrize("profile", PROFILES)
def test_profile_summary_accounts_for_every_kernel(profile: str) -> None:
    """profile_step's grouping (the README's table) of a stored H200 profile: every kernel in
    exactly one group, none of the named groups empty (the row selection only where the MLP
    skips rows), the rows adding up to the step."""
    from profile_step import GROUPS, summary

    path = REPO / "benchmarks/reference" / f"profile-graph-fused-{profile}.json"
    record = json.loads(path.read_text())
    for kernel in record["kernels"]:
        assert sum(member(kernel["name"]) for _, member in GROUPS) <= 1, kernel["name"]
    rows = [line.split(maxsplit=2) for line in summary(record).splitlines()[1:]]
    per_step = [float(row[0]) for row in rows]
    counts = {label: int(row[1]) for (label, _), row in zip(GROUPS, rows, strict=False)}
    selection = counts.pop(next(label for label in counts if label.startswith("rows for")))
    assert all(n > 0 for n in counts.values())
    assert (selection > 0) == profile.endswith("-keep")
    grouped, idle, step = sum(per_step[:-2]), per_step[-2], per_step[-1]
    assert grouped == pytest.approx(record["kernels_us"] / record["steps"], abs=0.3)
    assert grouped + idle == pytest.approx(step, abs=0.3)


def test_workflow_overhead_counts_the_grid_jobs(tmp_path: Path) -> None:
    """`workflow_overhead.py` on a 2 x 2 x 2 grid: Snakemake's dry run plans one training
    and one evaluation job per cell, and the JSON has the timings."""
    pytest.importorskip("snakemake")
    cmd = [
        sys.executable, str(REPO / "benchmarks" / "workflow_overhead.py"),
        "--values", "2", "--repeats", "1", "--out", str(tmp_path),
    ]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "8 training jobs" in done.stdout
    (path,) = tmp_path.glob("workflow-overhead-*.json")
    record = json.loads(path.read_text())
    assert record["jobs"]["train"] == record["jobs"]["evaluate"] == 8
    assert record["dry_run_s"] > 0 and all(s > 0 for s in record["startup_s"].values())


def test_cpu_gemm_splits_an_iteration(tmp_path: Path) -> None:
    """`cpu_gemm.py` counts the rows the MLP saw (all alive: about half the cells fire, each
    seen once in the forward and once in the backward) and times its GEMMs inside one
    iteration; the JSON has every GEMM's rate alone, and with --profile their time and rate
    inside a profiled iteration (82.5 GFLOP for about half of the cells)."""
    cmd = [
        sys.executable, str(REPO / "benchmarks" / "cpu_gemm.py"),
        "--state", "full", "--iters", "1", "--profile", "--out", str(tmp_path),
    ]  # fmt: skip
    env = {**os.environ, "NCAFLOW_COMPILE": "0"}  # the eager perception: no compile wait
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env, check=False)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    (path,) = tmp_path.glob("cpu-gemm-full-*.json")
    record = json.loads(path.read_text())
    cells_steps = 8 * 72 * 72 * 64
    for phase in ("forward", "backward"):
        assert 0.4 < record["mlp_rows_per_iteration"][phase] / cells_steps < 0.6
        assert 0 < record["mlp_s"][phase] < record["iteration_s"]
    assert len(record["gemms_alone"]) == 6
    assert all(r["gflops"] > 0 for r in record["gemms_alone"].values())
    in_situ = record["gemms_in_situ"]
    assert 0 < in_situ["s"] < in_situ["iteration_s"]  # inside the iteration profiled
    assert 70 < in_situ["gflop"] < 95  # 62,208 FLOP per row seen (forward + backward)


def test_task_benchmark_times_each_run_configs_real_iteration(tmp_path: Path, mirror: Path) -> None:
    """`tasks.py --tiny`: every run config's training iteration (its data pipeline,
    augmentation, readout, loss) at its own batch and a second one, in cell-steps/s beside
    the kernel's rate, with where the time went; timings themselves are not asserted."""
    cmd = [
        sys.executable, str(REPO / "benchmarks" / "tasks.py"), "--tiny", "--big-batch", "3",
        "--iters", "1", "--warmup", "1", "--profile-iters", "1", "--kernel-batch", "2",
        "--kernel-size", "12", "--kernel-steps", "3", "--kernel-iters", "1",
        "--out", str(tmp_path), "--name", "t.json",
    ]  # fmt: skip
    env = {**os.environ, "NCAFLOW_DATA_MIRROR": str(mirror), "NCAFLOW_COMPILE": "0"}
    done = subprocess.run(
        cmd, capture_output=True, text=True, timeout=900, check=False, env=env, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads((tmp_path / "t.json").read_text())
    assert result["kernel"]["cell_steps_per_s"] > 0
    assert result["growing_b8_train_it_per_s"] > 0
    rows = result["rows"]
    assert [(r["config"], r["batch_asked"]) for r in rows] == [
        (name, b)
        for name, own in (("growing", 2), ("selfclass", 4), ("breastmnist", 4), ("kvasir", 2))
        for b in (own, 3)
    ]
    for r in rows:
        assert "error" not in r, r
        assert r["batch"] == r["batch_asked"]
        h, w = r["grid"]
        assert r["cell_steps_per_s"] == pytest.approx(
            r["batch"] * h * w * r["steps"] / r["seconds"]
        )
        assert r["ratio_to_kernel"] > 0
        assert set(r["host_s"]) == {
            "sample",
            "graphed iteration",
            "scheduler + after_step",
            "loss readback",
        }
        assert r["profile"]["top_ops"]


def test_workflow_run_reads_the_span_and_iterations(tmp_path: Path) -> None:
    """`grid.py workflow-run`: the span from the first train rule's start to the last train
    job's end in a Snakemake log, and each job's iterations from its history.csv."""
    log = tmp_path / "run.log"
    log.write_text(
        "[Mon Dec  7 03:51:40 2026]\nlocalrule download:\n    jobid: 3\n"
        "[Mon Dec  7 03:51:44 2026]\nFinished jobid: 3 (Rule: download)\n"
        "[Mon Dec  7 03:51:44 2026]\nlocalrule train:\n    jobid: 4\n"
        "[Mon Dec  7 03:51:44 2026]\nlocalrule train_b_2folds:\n    jobid: 5\n"
        "[Mon Dec  7 03:52:10 2026]\nFinished jobid: 4 (Rule: train)\n"
        "[Mon Dec  7 03:52:10 2026]\nlocalrule evaluate:\n    jobid: 6\n"
        "[Mon Dec  7 03:55:50 2026]\nFinished jobid: 5 (Rule: train_b_2folds)\n"
        "[Mon Dec  7 03:56:30 2026]\nFinished jobid: 6 (Rule: evaluate)\n"
    )
    for name, last in (("base/fold0", 3000), ("focal/fold1", 2100)):
        (tmp_path / "models" / name).mkdir(parents=True)
        (tmp_path / "models" / name / "history.csv").write_text(
            f"iteration,loss\n100.0,0.6\n{last}.0,0.4\n"
        )
    out = tmp_path / "w.json"
    cmd = [sys.executable, str(REPO / "benchmarks" / "grid.py"), "workflow-run", "--log", str(log)]
    cmd += ["--models", str(tmp_path / "models"), "--out", str(out)]
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    run = json.loads(out.read_text())
    assert run["span_s"] == 3 * 60 + 50 + 16 and run["iterations"] == 5100
    assert [j["name"] for j in run["per_job"]] == ["base/fold0", "focal/fold1"]


def test_grid_projection_adds_up_from_the_records(tmp_path: Path) -> None:
    """`grid.py project` on the tiny config: every training job of its dry run is counted, a
    job's fixed cost is the recorded alone time less its training, and the hours add up."""
    out = tmp_path / "projection.json"
    records = REPO / "benchmarks" / "reference"
    cmd = [sys.executable, str(REPO / "benchmarks" / "grid.py"), "project"]
    cmd += ["--tasks", str(records / "tasks-20261207-h100.json")]
    cmd += ["--grid", str(records / "grid-20261207-h100.json")]
    cmd += ["--packed-run", str(records / "ablation-packed-20261207-h100.json")]
    cmd += ["--configfile", ".test/config/config.yaml", "--out", str(out)]
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    subprocess.run(cmd, cwd=REPO, env=env, check=True, capture_output=True, text=True)
    p = json.loads(out.read_text())
    grid = json.loads((records / "grid-20261207-h100.json").read_text())
    tasks = json.loads((records / "tasks-20261207-h100.json").read_text())
    it_s = next(r["iterations_per_s"] for r in tasks["rows"] if r["config"] == "breastmnist")
    alone = [j["wall_s"] for j in grid["baseline"]["per_job"]]
    fixed = sum(alone) / len(alone) - grid["iterations"] / it_s
    assert p["fixed_s_per_job"] == pytest.approx(fixed)
    dry_run = ["snakemake", "-n", "--forceall", "--quiet", "rules", "--cores", "1"]
    dry_run += ["--configfile", ".test/config/config.yaml"]
    dry = subprocess.run(
        dry_run, cwd=REPO, env=env, check=True, capture_output=True, text=True
    ).stdout
    trainings = next(int(line.split()[1]) for line in dry.splitlines() if line.startswith("train "))
    assert p["jobs"] == sum(t["jobs"] for t in p["per_task"].values()) == trainings
    training = sum(t["training_s"] for t in p["per_task"].values())
    hours = (p["jobs"] * p["fixed_s_per_job"] + training) / 3600
    assert p["one_gpu_one_at_a_time_h"] == pytest.approx(hours)
    packed = json.loads((records / "ablation-packed-20261207-h100.json").read_text())
    alone = sum(fixed + j["iterations"] / it_s for j in packed["per_job"])
    assert p["packing"] == pytest.approx(alone / packed["span_s"])
    assert p["gpus"]["4"] == pytest.approx(hours / p["packing"] / 4)
    assert p["gain"] == "modelled"
    # --gain-grid: the packing gain measured by a full-length grid record, the rest unchanged
    full = records / "grid-together-full-20261207-h100.json"
    at = cmd.index("--packed-run")
    cmd[at : at + 2] = ["--gain-grid", str(full)]
    subprocess.run(cmd, cwd=REPO, env=env, check=True, capture_output=True, text=True)
    measured = json.loads(out.read_text())
    assert measured["gain"] == "measured"
    assert measured["packing"] == json.loads(full.read_text())["speedup"]
    assert measured["one_gpu_one_at_a_time_h"] == pytest.approx(hours)
    assert measured["one_gpu_packed_h"] == pytest.approx(hours / measured["packing"])


def _run_alone_and_together(jobs: list[dict], tmp_path: Path) -> dict[str, dict]:
    """`grid.py run` of ``jobs`` on the CPU (6 iterations each, 2 at once), one process per job
    ("alone") and one per cell ("together", --together): mode -> the run's record."""
    plan = tmp_path / "jobs.json"
    plan.write_text(json.dumps(jobs))
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "CUDA_VISIBLE_DEVICES": ""}
    results = {}
    for mode in ("alone", "together"):
        out = tmp_path / f"{mode}.json"
        cmd = [sys.executable, str(REPO / "benchmarks" / "grid.py"), "run", "--jobs", str(plan)]
        cmd += ["--concurrency", "2", "--iterations", "6", "--root", str(tmp_path / mode)]
        cmd += ["--cache", str(tmp_path / "cache"), "--out", str(out)]
        cmd += ["--together"] if mode == "together" else []
        done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, check=False)
        assert done.returncode == 0, done.stderr[-2000:]
        results[mode] = json.loads(out.read_text())
    return results


def _shas(result: dict) -> dict[str, str]:
    """model name -> SHA-256 of its model.safetensors, from a `grid.py run` record."""
    return {j["name"]: j["sha256"] for j in result["per_job"]}


def test_grid_run_together_trains_each_cell_in_one_process(tmp_path: Path) -> None:
    """`grid.py run --together`: a cell's folds go to one `ncaflow train` process, and its
    models are the bytes of the same jobs run one process each."""
    from own_folders import classification_run, write_classification_folder

    from ncaflow.cli import main

    folder = write_classification_folder(tmp_path / "own", n=24)
    train = {"batch_size": 8, "steps": [3, 4], "lr": 0.01, "eval_every": 3}
    run = classification_run(tmp_path / "run.yaml", folder, train=train)
    folds = tmp_path / "folds.json"
    assert main(["prepare", "--config", str(run), "--out", str(folds), "--k", "2"]) == 0

    def argv(lr: float, fold: int) -> list[str]:
        sets = ["--set", f"train.lr={lr}", "--folds", str(folds), "--fold", str(fold)]
        return ["ncaflow", "train", "--config", str(run), "--out", "x", *sets]

    jobs = [
        {"name": f"{cell}/fold{k}", "argv": argv(lr, k)}
        for cell, lr in (("lr~0.01", 0.01),)
        for k in (0, 1)
    ]
    results = _run_alone_and_together(jobs, tmp_path)
    alone, together = results["alone"], results["together"]
    assert (alone["processes"], together["processes"]) == (2, 1)
    assert alone["failed"] == together["failed"] == []
    assert _shas(alone) == _shas(together) and None not in _shas(alone).values()
    assert len(set(_shas(alone).values())) == 2  # the two folds are two models
    logs = sorted((tmp_path / "together").glob("*.log"))
    assert [log.read_text().count("trained classification") for log in logs] == [2]


def test_committed_records_name_no_machine_path() -> None:
    """The records under benchmarks/reference/ say where things ran in repository-relative
    paths (OUT: the device's output folder), never a machine's own folders."""
    leaks = re.compile(r"(?<![\w.])/(work|root|home|tmp)/")
    found = [
        f"{path.name}:{n}"
        for path in sorted((REPO / "benchmarks" / "reference").iterdir())
        if path.is_file()
        for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1)
        if leaks.search(line)
    ]
    assert found == []


def test_recipe_search_runs_variants_and_seeds_and_reads_validation(tmp_path: Path) -> None:
    """benchmarks/recipes.py: a job per variant x seed (the variant's overrides and --seed
    appended to the workflow's command), run by `grid.py run --together` (a variant's seeds
    in turn in one process), the same models as one process per seed; the summary holds
    each seed's best validation value and no test metric."""
    import recipes
    from own_folders import classification_run, write_classification_folder

    folder = write_classification_folder(tmp_path / "own", n=24)
    train = {"batch_size": 8, "steps": [3, 4], "lr": 0.01, "eval_every": 3}
    run = classification_run(tmp_path / "run.yaml", folder, train=train)
    argv = ["ncaflow", "train", "--config", str(run), "--out", "x"]
    jobs = recipes.plan(argv, {"base": {}, "lr": {"train.lr": 0.05}}, seeds=2)
    assert [j["name"] for j in jobs] == ["base/seed0", "base/seed1", "lr/seed0", "lr/seed1"]
    assert jobs[3]["argv"] == [*argv, "--set", "train.lr=0.05", "--seed", "1"]
    results = _run_alone_and_together(jobs, tmp_path)
    assert (results["alone"]["processes"], results["together"]["processes"]) == (4, 2)
    shas = _shas(results["alone"])
    assert shas == _shas(results["together"]) and len(set(shas.values())) == 4
    summary = recipes.summary(tmp_path / "together", "val_auc", "max")
    base = summary["variants"]["base"]
    assert sorted(base["seeds"]) == ["seed0", "seed1"]
    for seed in base["seeds"].values():  # evaluations at iterations 3 and 6
        assert seed["best_at"] in (3.0, 6.0) and 0.0 <= seed["best"] <= 1.0
        assert seed["best"] >= seed["last"]
    assert "test" not in json.dumps(summary)
    assert recipes.table(summary).count("\n") == 3  # header, rule, two variants


@pytest.mark.parametrize(
    ("text", "named"),
    [("a: 3\n", "a must map"), ("- 1\n", "the file must map"), ("a: [\n", "cannot read")],
)
def test_recipe_plan_refuses_a_bad_variants_file(tmp_path: Path, text: str, named: str) -> None:
    """A variants file that is not `name -> {key: value}` ends in one line naming it, before
    Snakemake is asked for anything."""
    import recipes

    variants = tmp_path / "v.yaml"
    variants.write_text(text)
    out = tmp_path / "jobs.json"
    argv = ["plan", "--target", "x", "--variants", str(variants), "--out", str(out)]
    with pytest.raises(SystemExit) as stop:
        recipes.main(argv)
    assert str(variants) in str(stop.value) and named in str(stop.value)
    assert not out.exists()


def test_grid_plan_gives_the_workflows_training_commands() -> None:
    """grid.train_commands (grid.py plan, recipes.py plan): every `ncaflow train` of a dry run,
    without the shell's redirection into the job's log or the workflow's --restart-changed;
    grid.py plan of the paper grid gives the committed jobs file exactly."""
    import grid

    commands = grid.train_commands([], ".test/config/config.yaml")
    assert commands and all(c[:2] == ["ncaflow", "train"] for c in commands)
    assert not {">", ">>", "2>&1", "--restart-changed"} & {a for c in commands for a in c}
    committed = json.loads((REPO / "benchmarks/reference/grid-jobs-breastmnist.json").read_text())
    assert grid.plan("breastmnist", "config/paper.yaml") == committed


def test_task_profile_lists_kernels_by_device_time() -> None:
    """tasks.py's profile table, from profiler events as torch gives them on a GPU (a CPU has
    none to give): kernels by device time per iteration with their launches, host operators
    kept apart, the labelled phases by host time."""
    from types import SimpleNamespace

    import tasks

    def event(key: str, count: int, cpu: float, device: float, on_gpu: bool) -> SimpleNamespace:
        return SimpleNamespace(
            key=key, count=count, cpu_time_total=cpu, self_cpu_time_total=cpu,
            device_time_total=device, self_device_time_total=device,
            device_type="DeviceType.CUDA" if on_gpu else "DeviceType.CPU",
        )  # fmt: skip

    events = [
        event("sample", 2, 400.0, 0.0, False),
        event("aten::mm", 40, 900.0, 0.0, False),
        event("mlp_bwd", 40, 0.0, 3000.0, True),
        event("mlp_fwd", 40, 0.0, 1000.0, True),
        event("Memset", 2, 0.0, 0.0, True),
    ]
    table = tasks.profile_table(SimpleNamespace(key_averages=lambda: events), 2)
    assert table["phases_cpu_us"] == {"sample": 200.0}
    assert [k["name"] for k in table["top_kernels"]] == ["mlp_bwd", "mlp_fwd"]  # no idle ones
    assert table["top_kernels"][0] == {"name": "mlp_bwd", "launches": 20.0, "device_us": 1500.0}
    assert table["kernels_seen_us"] == 2000.0 and table["kernel_launches"] == 41.0
    assert table["top_ops"][0]["name"] == "aten::mm"  # operators by host time, phases apart


MAIN_JOB_LOG = """\
[Mon Dec  7 14:27:54 2026]
localrule download:
    output: data/raw/manifests/breastmnist.json
    jobid: 23
    reason: Forced execution
    wildcards: task=breastmnist
[Mon Dec  7 14:27:57 2026]
Finished jobid: 23 (Rule: download)
[Mon Dec  7 14:27:57 2026]
localrule train:
    jobid: 25
    wildcards: task=breastmnist, cell=width~48, fold=1
[Mon Dec  7 14:27:57 2026]
localrule train:
    jobid: 24
    wildcards: task=breastmnist, cell=width~48, fold=0
[Mon Dec  7 14:36:09 2026]
Finished jobid: 25 (Rule: train)
[Mon Dec  7 14:36:19 2026]
Finished jobid: 24 (Rule: train)
[Mon Dec  7 14:36:19 2026]
localrule all:
    jobid: 0
[Mon Dec  7 14:36:19 2026]
Finished jobid: 0 (Rule: all)
Elapsed time: 0:08:25.5
"""


def test_main_job_record_reads_the_log_and_benchmark_files(tmp_path: Path) -> None:
    """benchmarks/main_job.py: Snakemake's elapsed time, each job's span (wildcards follow
    the jobid line), the cores' idle time, and the seconds of every benchmark file."""
    import main_job

    log = tmp_path / "run.snakemake.log"
    log.write_text(MAIN_JOB_LOG)
    bench = tmp_path / "results" / "benchmarks"
    files = {"train/breastmnist/width~48/fold0": 502.1, "download/breastmnist": 3.0}
    files["cortex_m"] = 47.7  # a target of another run: left out
    for name, seconds in files.items():
        (bench / name).parent.mkdir(parents=True, exist_ok=True)
        (bench / f"{name}.tsv").write_text(f"s\th:m:s\tmax_rss\n{seconds}\t0:08:22\t900\n")
    out = tmp_path / "record"
    main_job.main(["--log", str(log), "--results", str(tmp_path / "results"), "--what", "t",
                   "--out", str(out / "run.json")])  # fmt: skip
    record = json.loads((out / "run.json").read_text())
    assert record["snakemake_elapsed_s"] == 505.5
    spans = {j["job"]: (j["start_s"], j["end_s"]) for j in record["timeline"]}
    assert spans == {
        "download/breastmnist": (0.0, 3.0),
        "train/breastmnist/width~48/fold1": (3.0, 495.0),
        "train/breastmnist/width~48/fold0": (3.0, 505.0),
    }
    # 2 cores x 505 s, less 3 + 492 + 502 busy
    assert record["idle_core_s"] == 2 * 505 - (3 + 492 + 502)
    assert record["train_job_seconds"] == {"breastmnist/width~48/fold0": 502.1}
    assert record["other_job_seconds"] == {"download/breastmnist": 3.0}


@pytest.mark.parametrize(
    ("record", "idle"), [("main-job-20261207", 163.0), ("main-job-longest-first-20261207", 1.0)]
)
def test_main_job_records_idle_time_comes_from_their_logs(record: str, idle: float) -> None:
    """benchmarks/README's idle core-seconds of the main job before and after the longest jobs
    started first (163 and 1) and the elapsed times are what the committed Snakemake logs give."""
    import main_job
    import snakemake_log

    folder = REPO / "benchmarks" / "reference" / record
    elapsed, jobs = snakemake_log.read((folder / "snakemake.log").read_text())
    run = json.loads((folder / "run.json").read_text())
    assert elapsed is not None and round(elapsed, 1) == run["snakemake_elapsed_s"]
    assert main_job.idle_core_seconds(jobs, 2) == idle
    assert {j.name.removeprefix("train/") for j in jobs} >= set(run["train_job_seconds"])
    text = (REPO / "benchmarks" / "README.md").read_text()
    assert f"{idle:.0f} idle core-second" in " ".join(text.split())
