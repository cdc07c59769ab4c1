"""A recipe search: variants of one workflow training job, several seeds each, judged on
validation only.

    python benchmarks/recipes.py plan --target results/models/breastmnist/width~32/fold0 \
        --variants benchmarks/recipes-breastmnist.yaml --seeds 4 --out JOBS.json
    python benchmarks/grid.py run --jobs JOBS.json --concurrency 16 --mps --root RUNS --out R.json
    python benchmarks/recipes.py summary --root RUNS --out S.json

plan asks Snakemake (grid.train_commands: a dry run of the default config) for the target's
`ncaflow train` command and writes one job per variant x seed: that command with the variant's
`--set` overrides and `--seed N` appended (both win over the command's own values), in grid.py's
jobs format, so grid.py runs them packed on a GPU (with --together, a variant's seeds in turn in
one process) or one at a time on a CPU. summary reads each job's history.csv: per variant the best
and the last validation value of the selection metric (the run config's early-stopping metric)
per seed, their mean and standard deviation, and the iteration of the best. It reads no test
split: a recipe is chosen on validation alone, and the test split stays for the table.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
from pathlib import Path
from typing import Any

import yaml
from grid import train_commands


def workflow_argv(target: str, configfile: str) -> list[str]:
    """The `ncaflow train` argv that the workflow runs for the model folder ``target``."""
    commands = train_commands([f"{target}/model.safetensors"], configfile)
    if len(commands) != 1:
        sys.exit(f"recipes.py plan: {target} is not one training job of the workflow")
    return commands[0]


def plan(argv: list[str], variants: dict[str, dict[str, Any]], seeds: int) -> list[dict[str, Any]]:
    """One grid.py job per variant x seed: ``argv`` + the variant's overrides + its seed."""
    jobs = []
    for name, overrides in variants.items():
        sets = [f"{key}={json.dumps(value)}" for key, value in (overrides or {}).items()]
        for seed in range(seeds):
            extra = [x for s in sets for x in ("--set", s)] + ["--seed", str(seed)]
            jobs.append({"name": f"{name}/seed{seed}", "argv": argv + extra})
    return jobs


def history(path: Path, metric: str) -> list[tuple[float, float]]:
    """(iteration, metric) of every evaluation in a history.csv."""
    with path.open() as f:
        rows = [r for r in csv.DictReader(f) if r.get(metric)]
    return [(float(r["iteration"]), float(r[metric])) for r in rows]


def summary(root: Path, metric: str, mode: str) -> dict[str, Any]:
    """Per variant: the best and last ``metric`` of each seed, mean and std over seeds."""
    pick = max if mode == "max" else min
    variants: dict[str, Any] = {}
    for path in sorted(root.glob("*/seed*/history.csv")):
        rows = history(path, metric)
        if not rows:
            continue
        best = pick(rows, key=lambda r: r[1])
        seeds = variants.setdefault(path.parent.parent.name, {"seeds": {}})["seeds"]
        seeds[path.parent.name] = {"best": best[1], "best_at": best[0], "last": rows[-1][1]}
    for v in variants.values():
        for key in ("best", "last"):
            values = [s[key] for s in v["seeds"].values()]
            v[f"{key}_mean"] = statistics.mean(values)
            v[f"{key}_std"] = statistics.stdev(values) if len(values) > 1 else 0.0
    return {"metric": metric, "mode": mode, "variants": variants}


def table(result: dict[str, Any]) -> str:
    """The summary as a Markdown table, best mean first."""
    rows = sorted(
        result["variants"].items(),
        key=lambda kv: kv[1]["best_mean"],
        reverse=result["mode"] == "max",
    )
    m = result["metric"]
    lines = [f"| variant | seeds | best {m} | last {m} | best at |", "|---|---:|---|---|---|"]
    for name, v in rows:
        at = "/".join(f"{s['best_at']:.0f}" for s in v["seeds"].values())
        lines.append(
            f"| {name} | {len(v['seeds'])} | {v['best_mean']:.3f} ± {v['best_std']:.3f} "
            f"| {v['last_mean']:.3f} ± {v['last_std']:.3f} | {at} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    pp = sub.add_parser("plan")
    pp.add_argument("--target", required=True, help="a model folder of the workflow")
    pp.add_argument("--configfile", default="", help="default: the workflow's own config")
    pp.add_argument("--variants", type=Path, required=True, help="YAML: name -> {key: value}")
    pp.add_argument("--seeds", type=int, default=4)
    pp.add_argument("--out", type=Path, required=True)
    ps = sub.add_parser("summary")
    ps.add_argument("--root", type=Path, required=True, help="grid.py run's --root")
    ps.add_argument("--metric", default="val_auc")
    ps.add_argument("--mode", choices=["max", "min"], default="max")
    ps.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    if args.cmd == "plan":
        try:
            variants = yaml.safe_load(args.variants.read_text())
        except (OSError, yaml.YAMLError) as e:
            sys.exit(f"recipes.py plan: {args.variants}: cannot read it ({type(e).__name__})")
        bad = (
            [n for n, o in variants.items() if not isinstance(o, dict | None)]
            if isinstance(variants, dict)
            else ["the file"]
        )
        if bad:
            sys.exit(
                f"recipes.py plan: {args.variants}: {bad[0]} must map dotted keys to values "
                "(variant name -> {key: value}, e.g. fire075: {model.fire_rate: 0.75})"
            )
        jobs = plan(workflow_argv(args.target, args.configfile), variants, args.seeds)
        args.out.write_text(json.dumps(jobs, indent=1) + "\n")
        print(f"{len(jobs)} jobs -> {args.out}")
    else:
        result = summary(args.root, args.metric, args.mode)
        if not result["variants"]:
            where = f"{args.root}/<variant>/seed<N>/history.csv"
            sys.exit(f"recipes.py summary: no {where} with a {args.metric} column")
        args.out.write_text(json.dumps(result, indent=1) + "\n")
        print(table(result))


if __name__ == "__main__":
    main()
