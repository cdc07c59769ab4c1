"""The ``ncaflow`` command line: one sub-command per workflow stage.

Imports are done inside the commands so that ``ncaflow --help`` and every
Snakemake job start fast.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from ncaflow.backends import IMPLS
from ncaflow.config import MAX_STEPS

if TYPE_CHECKING:
    from ncaflow.config import RunConfig

__all__ = ["main"]

COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {}


def command(fn: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    COMMANDS[fn.__name__.removeprefix("cmd_")] = fn
    return fn


@command
def cmd_train(args: argparse.Namespace) -> int:
    from ncaflow.config import ConfigError
    from ncaflow.tasks.runconfig import load_config

    outs, folds, seeds = args.out, args.fold or [], args.seed or []
    for name, values in (("--fold", folds), ("--seed", seeds)):
        if values and len(values) != len(outs):
            raise ConfigError(
                f"{name} gives {len(values)} values for {len(outs)} --out folders; "
                f"give one {name} value per --out folder, in the same order"
            )
    if len(outs) > 1 and not folds and not seeds:
        raise ConfigError(
            f"{len(outs)} --out folders would train the same run {len(outs)} times; "
            "give one --fold (with --folds) or --seed value per folder"
        )
    if folds and args.folds is None:
        raise ConfigError(f"--fold {folds[0]} needs --folds FOLDS.json (from ncaflow prepare)")
    if len({os.path.realpath(out) for out in outs}) != len(outs):
        raise ConfigError("--out names a folder twice; give each job its own --out folder")
    jobs = []  # (folder, its overrides, its config): one run each, in turn, in this process
    for i, out in enumerate(outs):
        overrides = list(args.set)
        if seeds:
            overrides.append(f"train.seed={seeds[i]}")
        if folds:
            overrides.append(f"data.fold={folds[i]}")
        if args.folds is not None:
            overrides.append(f"data.folds={args.folds}")
        jobs.append((Path(out), overrides, load_config(args.config, overrides)))
    if any(c.train.reproducible for *_, c in jobs) and args.argv is not None:
        from ncaflow.runtime.reproducible import reexec_if_needed

        reexec_if_needed(args.argv)  # the process's own command line
    for out, overrides, config in jobs:
        _train_one(args, out, overrides, config)
    return 0


def _train_one(
    args: argparse.Namespace, out: Path, overrides: list[str], config: RunConfig
) -> None:
    """One run of ``ncaflow train`` into ``out`` (several --out folders: one after another)."""
    from ncaflow.training.train import train

    if args.restart_changed:
        from ncaflow.training.jobkey import claim, job_key

        if claim(out, job_key(args.config, overrides)):
            print(f"resuming from {out / 'checkpoint.safetensors'}", flush=True)
    result = train(config, out, impl=args.impl, overwrite=args.overwrite)
    if args.restart_changed:
        from ncaflow.training.jobkey import release

        release(out)
    print(
        f"trained {config.task} for {result.iterations} iterations in {result.seconds:.0f} s; "
        f"best {config.train.early_stopping.metric} = {result.best_metric:.4g} "
        f"at iteration {result.best_iteration}; model in {out / 'model.safetensors'}",
        flush=True,
    )


@command
def cmd_evaluate(args: argparse.Namespace) -> int:
    from ncaflow.inference.evaluate import evaluate
    from ncaflow.training.train import select_device

    metrics = evaluate(
        args.model,
        int8=args.int8,
        splits=tuple(args.split),
        overrides=args.set,
        out=args.out,
        device=str(select_device(args.device, key="--device")),
        seed=args.seed,
    )
    print(json.dumps(metrics, indent=2))
    return 0


@command
def cmd_prepare(args: argparse.Namespace) -> int:
    from ncaflow.data import make_folds, write_folds
    from ncaflow.tasks import get_task
    from ncaflow.tasks.runconfig import load_config

    config = load_config(args.config, [*args.set, "data.folds=null"])
    task = get_task(config.task)(config=config, device="cpu")
    task.setup()
    labels, n, checksum = task.fold_pool()
    folds = make_folds(labels, n=n, k=args.k, seed=args.seed, checksum=checksum)
    write_folds(args.out, folds)
    sizes = ", ".join(f"{len(f['train'])}/{len(f['val'])}" for f in folds["folds"])
    print(f"{args.k} folds (train/val: {sizes}) of {n} {config.task} samples -> {args.out}")
    return 0


@command
def cmd_download(args: argparse.Namespace) -> int:
    from ncaflow.config import ConfigError
    from ncaflow.guard.io import atomic_write
    from ncaflow.tasks import get_task
    from ncaflow.tasks.runconfig import load_config

    config = load_config(args.config, [*args.set, "data.folds=null"])
    task = get_task(config.task)(config=config, device="cpu")
    task.setup()  # fetches every file the task reads (mirror, cache or download)
    try:
        checksum = task.fold_pool()[2]
    except ConfigError:
        checksum = None  # a task without a train/val pool (growing)
    data = {k: v for k, v in config.data.items() if k not in ("mirror", "folds", "fold")}
    manifest = {"name": args.name, "task": config.task, "data": data}
    manifest["pool_checksum"] = checksum
    manifest["data_checksum"] = task.data_checksum()  # any change re-runs this task's jobs
    text = json.dumps(manifest, indent=2) + "\n"
    atomic_write(args.out, lambda tmp: tmp.write_text(text))
    print(f"{args.name}: data ready in {task.data.root} (pool {checksum}) -> {args.out}")
    return 0


def _model_and_task(args: argparse.Namespace) -> tuple[Any, Any]:
    """The saved model and its task, set up on the model's data (with --set overrides)."""
    from ncaflow.guard.io import config_of, load
    from ncaflow.inference.evaluate import with_overrides
    from ncaflow.tasks import get_task

    model = load(args.model)
    config = with_overrides(config_of(model), args.set)
    task = get_task(config.task)(config=config, device="cpu")
    task.setup()
    return model, task


@command
def cmd_animate(args: argparse.Namespace) -> int:
    from ncaflow.viz.animate import animate

    model, task = _model_and_task(args)
    steps = args.steps or task.eval_steps
    frames = animate(
        model,
        task,
        args.out,
        steps=steps,
        split=args.split,
        index=args.index,
        every=args.every,
        scale=args.scale,
        seed=args.seed,
    )
    print(f"{frames} frames -> {args.out}")
    return 0


@command
def cmd_uncertainty(args: argparse.Namespace) -> int:
    from ncaflow.config import ConfigError
    from ncaflow.viz.heatmaps import uncertainty_figure

    model, task = _model_and_task(args)
    steps = args.steps or task.eval_steps
    if args.window and not 2 <= args.window <= steps:
        raise ConfigError(f"--window {args.window}: give 0 (off) or 2..{steps} (the rollout)")
    uncertainty_figure(
        model,
        task,
        args.out,
        steps=steps,
        n_rollouts=args.rollouts,
        n_examples=args.examples,
        split=args.split,
        seed=args.seed,
        window=args.window,
    )
    print(f"uncertainty heatmaps ({args.rollouts} rollouts) -> {args.out}")
    return 0


@command
def cmd_check(args: argparse.Namespace) -> int:
    from collections import Counter

    from ncaflow.guard.io import ModelFileError, upgrade, verify
    from ncaflow.runtime.reproducible import guarantee

    models = _model_files(args.paths)
    damaged, old, kinds = [], 0, Counter[str]()
    for model in models:
        try:
            rewritten = upgrade(model) if args.upgrade else False
            checked = verify(model)
            old += rewritten if args.upgrade else checked.format_version < 2
            kinds[guarantee(checked.meta)] += 1
        except ModelFileError as err:
            damaged.append(f"ncaflow check: {err}")
    for line in damaged:
        print(line, file=sys.stderr)
    if args.upgrade:
        note = f" ({old} rewritten from format version 1)" if old else ""
    else:
        note = f" ({old} in format version 1, whose JSON carries no digest)" if old else ""
    print(f"{len(models) - len(damaged)} of {len(models)} models intact{note}")
    for kind, count in sorted(kinds.items()):
        print(f"  {count} {kind}")
    return 1 if damaged else 0


def _cell(value: object) -> object:
    """A CSV cell with control characters (ESC, newline) escaped: label names come from a
    model file, and raw escape codes would reach the terminal."""
    from ncaflow.runtime.safe_io import printable

    return printable(value) if isinstance(value, str) else value


def _model_files(paths: list[str]) -> list[Path]:
    """One path per saved model (its .safetensors) found in files or folders (recursive)."""
    from ncaflow.guard.io import model_paths

    found: set[Path] = set()
    for given in map(Path, paths):
        if given.is_dir():
            hits = [*given.rglob("*.safetensors"), *given.rglob("model.json")]
        elif not given.exists():
            raise FileNotFoundError(2, "no such model file or folder", str(given))
        elif given.suffix in (".safetensors", ".json"):
            hits = [given]
        else:
            raise ValueError(
                f"{given}: not a model file; pass a .safetensors, its .json or a folder"
            )
        found.update(model_paths(hit)[0] for hit in hits)
        if not hits:
            raise ValueError(
                f"{given}: no model files (*.safetensors, model.json) in this folder; "
                "pass the folder that holds the models"
            )
    return sorted(found)


@command
def cmd_predict(args: argparse.Namespace) -> int:
    import csv
    import io

    from ncaflow.inference.predict import predict
    from ncaflow.training.train import select_device

    fmt = args.format
    table = None
    if args.out is not None and Path(args.out).suffix in (".csv", ".json"):
        fmt, table = fmt or Path(args.out).suffix[1:], Path(args.out)
    results = predict(
        args.model,
        args.images,
        out=None if table else args.out,
        resize=not args.no_resize,
        seed=args.seed,
        device=str(select_device(args.device, key="--device")),
    )
    rows = [r.row() for r in results]
    if fmt == "json":
        text = json.dumps(rows, indent=2) + "\n"
    else:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(
            {k: json.dumps(v) if isinstance(v, list) else _cell(v) for k, v in r.items()}
            for r in rows
        )
        text = buffer.getvalue()
    if table is None:
        print(text, end="")
    else:
        from ncaflow.guard.io import atomic_write

        atomic_write(table, lambda tmp: tmp.write_text(text))
        print(f"{len(rows)} predictions -> {table}")
    return 0


@command
def cmd_info(args: argparse.Namespace) -> int:
    from ncaflow.config import to_dict
    from ncaflow.guard.io import config_of, load
    from ncaflow.runtime.reproducible import guarantee

    model = load(args.model)
    config = config_of(model)
    size = sum(p.numel() for p in model.parameters())
    meta = getattr(model, "meta", {})
    info = {
        "task": config.task,
        "parameters": size,
        "environment": meta.get("environment"),
        "guarantee": guarantee(meta),
        "config": to_dict(config),
    }
    print(json.dumps(info, indent=2))
    return 0


@command
def cmd_export(args: argparse.Namespace) -> int:
    from ncaflow.export import export_with_report, parse_size

    size = parse_size(args.size) if args.size else None
    _, summary = export_with_report(
        args.model,
        args.out,
        name=args.name,
        int8=args.int8,
        size=size,
        steps=args.steps,
        state=args.state,
    )
    print(summary)
    return 0


@command
def cmd_aggregate(args: argparse.Namespace) -> int:
    from ncaflow.tables.aggregate import write_tables

    summary = write_tables(
        args.metrics,
        task=args.task,
        metric=args.select,
        mode=args.mode,
        csv=args.csv,
        md=args.md,
        tex=args.tex,
        folds_csv=args.folds_csv,
        best=args.best,
    )
    best = summary.loc[summary["best"], "cell"].iloc[0]
    print(f"{args.task}: {len(summary)} cells, best {best} by {args.select} -> {args.csv}")
    return 0


@command
def cmd_figures(args: argparse.Namespace) -> int:
    from ncaflow.viz import figures

    if args.kind == "summary":
        if not (args.folds_csv and args.select and args.out_dir):
            raise ValueError("figures summary needs --folds-csv, --select and --out-dir")
        paths = figures.summary_figures(
            args.folds_csv,
            metric=args.select,
            mode=args.mode,
            out_dir=args.out_dir,
            kinds=args.only or figures.SUMMARY,
        )
    else:
        if not (args.model and args.out):
            raise ValueError(f"figures {args.kind} needs --model and --out")
        paths = figures.PER_MODEL[args.kind](args.model, args.out)
    print("\n".join(str(p) for p in paths))
    return 0


def _at_least(low: int, most: int | None = None) -> Callable[[str], int]:
    """An argparse type: an integer >= low (and <= most)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text[:40]!r} is not an integer") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"{value} is below {low}")
        if most is not None and value > most:
            raise argparse.ArgumentTypeError(f"{value} is above {most}")
        return value

    return parse


def _set_arg(p: argparse.ArgumentParser, help: str) -> None:
    """The repeatable ``--set KEY=VALUE`` config override."""
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help=help)


def _rollout_args(p: argparse.ArgumentParser, *, out: str) -> None:
    """Arguments of the commands that roll out a saved model on examples of its data."""
    p.add_argument("--model", required=True, help="model.safetensors, its .json, or its directory")
    p.add_argument("--out", required=True, help=out)
    p.add_argument(
        "--steps",
        type=_at_least(1, most=MAX_STEPS),
        help="rollout length (default: the evaluation length)",
    )
    p.add_argument("--split", default="test", help="split to take the examples from")
    p.add_argument("--seed", type=int, default=0, help="seed of the fire masks")
    _set_arg(p, "override a stored config value, e.g. --set data.mirror=DIR")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="ncaflow", description="Neural Cellular Automata pipeline")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("train", help="train a model (or several in turn) from a YAML run config")
    p.add_argument("--config", required=True, help="YAML run config (see config/README.md)")
    p.add_argument(
        "--out",
        required=True,
        nargs="+",
        help="output directory (resumes if it holds a checkpoint); several: one run each, "
        "one after another in this process (with one --fold or --seed value each)",
    )
    _set_arg(p, "override a config value, e.g. --set train.lr=1e-3 (repeatable)")
    p.add_argument(
        "--fold",
        type=int,
        nargs="+",
        help="fold index into the folds file (data.fold), one per --out folder",
    )
    p.add_argument("--seed", type=int, nargs="+", help="train.seed, one per --out folder")
    p.add_argument("--folds", help="folds JSON from `ncaflow prepare` (data.folds)")
    p.add_argument(
        "--restart-changed",
        action="store_true",
        help="resume a checkpoint in --out only if this config file and these options left "
        "it; otherwise remove it and start afresh (the workflow's train jobs)",
    )
    p.add_argument(
        "--impl",
        choices=IMPLS,
        default="auto",
        help="NCA implementation (same results; for GPUs: 'compiled' = torch.compile, "
        "'fused' = Triton kernels for the update MLP, which 'auto' picks on CUDA with triton)",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace a finished model of another config in --out (default: refuse)",
    )

    p = sub.add_parser("evaluate", help="metrics of a saved model on its task's data")
    p.add_argument(
        "--model",
        required=True,
        action="append",
        help="model.safetensors, its .json, or its directory; repeated: an ensemble of "
        "classification models (their class scores averaged)",
    )
    p.add_argument(
        "--split",
        action="append",
        choices=["val", "test"],
        default=None,
        help="split(s) to evaluate (default: val and test)",
    )
    _set_arg(p, "override a stored config value, e.g. --set data.mirror=DIR")
    p.add_argument("--out", help="write the metrics JSON here")
    p.add_argument("--device", default="cpu", help="cpu, cuda, ... or auto (cuda, mps, cpu)")
    p.add_argument("--seed", type=int, default=0, help="seed of the fire masks")
    p.add_argument("--int8", action="store_true", help="with the int8 C export's weights")

    p = sub.add_parser("prepare", help="download the data of a run config and write its k folds")
    p.add_argument("--config", required=True, help="YAML run config")
    p.add_argument("--out", required=True, help="folds JSON to write")
    p.add_argument("--k", type=int, default=5, help="number of folds (1: one train/val split)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")

    p = sub.add_parser("download", help="fetch a run config's data; write its manifest JSON")
    p.add_argument("--config", required=True, help="YAML run config")
    p.add_argument("--name", required=True, help="task name recorded in the manifest")
    p.add_argument("--out", required=True, help="manifest JSON to write")
    _set_arg(p, "override a config value, e.g. --set data.flag=dermamnist (repeatable)")

    p = sub.add_parser("animate", help="GIF of a saved model's rollout")
    _rollout_args(p, out="GIF to write")
    p.add_argument("--index", type=_at_least(0), default=0, help="which example of the split")
    p.add_argument("--every", type=_at_least(1), default=1, help="keep every n-th step as a frame")
    p.add_argument("--scale", type=_at_least(1, most=64), default=4, help="pixel upscaling")

    p = sub.add_parser("uncertainty", help="mean/variance heatmaps over stochastic rollouts")
    _rollout_args(p, out="PNG or PDF to write")
    p.add_argument("--rollouts", type=_at_least(1, most=1000), default=16)
    p.add_argument("--examples", type=_at_least(1, most=100), default=4)
    p.add_argument(
        "--window",
        type=_at_least(0, most=MAX_STEPS),
        default=0,
        help="also the variance over the last W steps of one rollout (0: off; 2..steps)",
    )

    p = sub.add_parser(
        "check",
        help="verify saved models as load does: digest, SHA-256, config, tensor shapes, "
        "finite values",
    )
    p.add_argument("paths", nargs="+", help="folders (searched recursively) or model files")
    p.add_argument(
        "--upgrade",
        action="store_true",
        help="rewrite intact format-1 JSON files as format 2 (adds the digest; weights unchanged)",
    )

    p = sub.add_parser("predict", help="classify image files, or segment them, with a saved model")
    p.add_argument("--model", required=True, help="model.safetensors, its .json, or its directory")
    p.add_argument("images", nargs="+", help="image files (PNG, JPEG, ...)")
    p.add_argument(
        "--out",
        help="segmentation: folder for one mask PNG per image (required); "
        "classification: a .csv or .json file for the table (default: print it)",
    )
    p.add_argument("--format", choices=["csv", "json"], help="table format (default: csv)")
    p.add_argument(
        "--no-resize",
        action="store_true",
        help="refuse images of another size than the model's (default: resize with a warning)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the fire masks")
    p.add_argument("--device", default="cpu", help="cpu, cuda, ... or auto (cuda, mps, cpu)")

    p = sub.add_parser("info", help="print a saved model's task, size and config")
    p.add_argument("model")

    p = sub.add_parser("export", help="export a saved model as a C99 header (+ footprint JSON)")
    p.add_argument("format", choices=["c"], help="target: c (one self-contained C99 header)")
    p.add_argument("model", help="model.safetensors, its .json, or its directory")
    p.add_argument("--out", required=True, help="header to write, e.g. nca.h (JSON goes beside)")
    p.add_argument("--int8", action="store_true", help="int8 weights, one scale per channel")
    p.add_argument("--size", help="grid HxW for the RAM/MAC report (default: the training size)")
    p.add_argument("--name", default="nca", help="prefix of the C symbols (default: nca)")
    p.add_argument(
        "--steps",
        type=_at_least(1, most=MAX_STEPS),
        help="steps per inference (default: the longest training)",
    )
    p.add_argument(
        "--state",
        choices=["float", "int8"],
        default="float",
        help="float: float32 state, two buffers; int8: one int8 state updated in place, "
        "per-channel scales calibrated on the model's validation images (microcontrollers)",
    )

    p = sub.add_parser("aggregate", help="tables of a task: mean +- std over folds per grid cell")
    p.add_argument("metrics", nargs="+", help=".../<cell>/fold<k>/metrics.json files")
    p.add_argument("--task", required=True, help="task name (table captions)")
    p.add_argument("--select", required=True, help="validation metric that picks the best cell")
    p.add_argument("--mode", choices=["min", "max"], required=True)
    p.add_argument("--csv", required=True, help="summary CSV")
    p.add_argument("--md", required=True, help="Markdown table")
    p.add_argument("--tex", required=True, help="LaTeX table")
    p.add_argument("--folds-csv", required=True, help="per-fold CSV")
    p.add_argument("--best", required=True, help="text file: folder of the best model")

    p = sub.add_parser("figures", help="workflow figures (PNG + PDF)")
    p.add_argument("kind", choices=["summary", "growth", "overlay"])
    p.add_argument("--folds-csv", help="summary: per-fold CSV from `ncaflow aggregate`")
    p.add_argument("--select", help="summary: validation metric")
    p.add_argument("--mode", choices=["min", "max"], default="max")
    p.add_argument("--out-dir", help="summary: folder for grid, folds, curves, params")
    p.add_argument(
        "--only", nargs="+", choices=["grid", "folds", "curves", "params"],
        help="summary: these figures only (grid and params need two or more cells)",
    )  # fmt: skip
    p.add_argument("--model", help="growth/overlay: model folder")
    p.add_argument("--out", help="growth/overlay: output path without extension")

    return parser


class _Parser(argparse.ArgumentParser):
    """argparse, with its usage errors as one line (the sub-parsers inherit this class)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message}; see `{self.prog} --help`\n")


def _one_line(text: object, limit: int = 1000) -> str:
    """One line, control characters escaped, at most ``limit`` characters."""
    from ncaflow.runtime.safe_io import printable

    line = printable(" ".join(str(text).split()))
    return line if len(line) <= limit else f"{line[: limit - 30]}... ({len(line)} characters)"


def _under(path: str, folder: str | list[str] | None) -> bool:
    """Whether ``path`` lies in ``folder`` (or is it; a list: in one of them)."""
    if not folder:
        return False
    if isinstance(folder, list):
        return any(_under(path, f) for f in folder)
    real, top = os.path.realpath(path), os.path.realpath(folder)
    return real == top or real.startswith(top.rstrip(os.sep) + os.sep)


def _os_error(err: OSError, args: argparse.Namespace) -> str:
    """An OSError as ``<file>: <what>; <fix>``; the fix names --out only where it helps."""
    path = err.filename or "a file"
    out = getattr(args, "out", None)
    if _under(str(path), out):  # the file named by --out, or one in that folder
        fix = "or choose another --out"
    elif hasattr(args, "set") and err.filename:  # the data cache under data.root
        fix = "or cache the data on another disk with --set data.root=DIR"
    else:
        fix = ""
    if isinstance(err, FileNotFoundError):
        return f"{path}: no such file or folder; check the path"
    if err.errno == errno.ENOSPC:
        return f"disk full while writing {path}; free space {fix}".rstrip()
    if err.errno == errno.EROFS or isinstance(err, PermissionError):
        return f"cannot write {path} (read-only); {fix.removeprefix('or ') or 'fix permissions'}"
    return f"{path}: {err.strerror or err}; check the path and its permissions"


def _stdout_lost(args: argparse.Namespace, why: str) -> str:
    fix = " or pass --out FILE" if hasattr(args, "out") else ""
    return (
        f"cannot write to standard output ({why}), so the result is lost; redirect it to a "
        f"file that can be written{fix}"
    )


class _Watched:
    """sys.stdout, remembering why a write to it failed (a full disk, a closed pipe)."""

    def __init__(self, stream: Any) -> None:
        self.stream, self.failed = stream, ""

    def write(self, text: str) -> int:
        try:
            return int(self.stream.write(text))
        except OSError as err:
            self.failed = err.strerror or str(err)
            raise

    def flush(self) -> None:
        """Flush; on failure remember why, and point the real stdout at /dev/null, so
        that Python does not report the same failure again when it exits."""
        try:
            self.stream.flush()
        except OSError as err:
            self.failed = err.strerror or str(err)
            if self.stream is sys.__stdout__:
                try:
                    null = os.open(os.devnull, os.O_WRONLY)
                    os.dup2(null, 1)  # the process's stdout
                    os.close(null)
                except (OSError, ValueError):
                    pass

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stream, name)


_MODEL_FOLDER = (
    "model.safetensors",
    "model.json",
    "last.safetensors",
    "last.json",
    "history.csv",
    "checkpoint.safetensors",
)


def _inputs(args: argparse.Namespace) -> list[tuple[str | Path, str]]:
    """Files a command reads, which none of its outputs may overwrite."""
    from ncaflow.guard.io import model_paths

    found: list[tuple[str | Path, str]] = []
    models = getattr(args, "model", None)
    for model in models if isinstance(models, list) else [models] if models else []:
        weights, meta = model_paths(model)
        found += [(weights, "the model's weights"), (meta, "the model's JSON")]
        found += [(weights.parent / name, "a file of the model folder") for name in _MODEL_FOLDER]
    found += [(image, "an input image") for image in getattr(args, "images", None) or []]
    found += [(m, "an input metrics file") for m in getattr(args, "metrics", None) or []]
    for key, what in (("config", "the run config"), ("folds", "the folds file")):
        if getattr(args, key, None):
            found.append((getattr(args, key), what))
    return found


def _outputs(args: argparse.Namespace) -> list[Path]:
    """Files a command writes (those named on its command line)."""
    if args.command == "train":  # one or more model folders
        return [Path(out) / name for out in args.out for name in (*_MODEL_FOLDER, "train.lock")]
    outs = [
        Path(v)
        for k in ("out", "csv", "md", "tex", "folds_csv", "best")
        if (v := getattr(args, k, None))
    ]
    if args.command == "export" and outs:
        outs.append(outs[0].with_suffix(".json"))  # the footprint report goes beside
    elif args.command == "figures" and outs:
        outs = [outs[0].with_suffix(".png"), outs[0].with_suffix(".pdf")]
    return outs


def _check_outputs(args: argparse.Namespace) -> None:
    """No output may overwrite an input (compared after resolving links: realpath)."""
    from ncaflow.runtime.safe_io import refuse_input

    inputs = _inputs(args)
    for out in _outputs(args):
        refuse_input(out, inputs)


def main(argv: list[str] | None = None) -> int:
    """Run one command; a user's mistake ends in one stderr line and a non-zero exit code.

    Lines read ``ncaflow <command>: <file/key>: <what>; <fix>``. Exit codes: 1 bad input
    or damaged file, 2 bad config or usage, 130 interrupted. Other exceptions are bugs
    and keep their traceback.
    """

    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    args.argv = sys.argv[1:] if argv is None else None  # train may re-execute with it
    if extra:
        parser.exit(
            2,
            f"ncaflow {args.command}: unrecognized arguments: {_one_line(' '.join(extra), 200)}; "
            f"see `ncaflow {args.command} --help`\n",
        )
    if getattr(args, "split", None) is None and args.command == "evaluate":
        args.split = ["val", "test"]
    prefix = f"ncaflow {args.command}"
    if sys.stdout is None or sys.stdout.closed:  # `ncaflow ... >&-`
        print(f"{prefix}: {_stdout_lost(args, 'it is closed')}", file=sys.stderr)
        return 1
    stdout = _Watched(sys.stdout)
    sys.stdout = stdout
    try:
        code = _run(args, prefix, stdout)
    finally:
        sys.stdout = stdout.stream
    return code


def _run(args: argparse.Namespace, prefix: str, stdout: _Watched) -> int:
    """The command, with every user error as one line on stderr (see :func:`main`)."""
    from ncaflow.config import ConfigError

    with warnings.catch_warnings():
        warnings.showwarning = lambda message, *_, **__: print(
            f"{prefix}: warning: {_one_line(message)}", file=sys.stderr
        )
        try:
            _check_outputs(args)
            code = COMMANDS[args.command](args)
            stdout.flush()
        except ConfigError as err:
            print(f"{prefix}: {_one_line(err)}", file=sys.stderr)
            return 2
        except OSError as err:
            stdout.flush()
            text = _stdout_lost(args, stdout.failed) if stdout.failed else _os_error(err, args)
            print(f"{prefix}: {_one_line(text)}", file=sys.stderr)
            return 1
        except RecursionError:
            print(f"{prefix}: an input is nested too deeply to read", file=sys.stderr)
            return 1
        except (RuntimeError, ValueError) as err:
            print(f"{prefix}: {_one_line(err)}", file=sys.stderr)
            return 1
        except KeyboardInterrupt as err:  # Ctrl-C; train's own message says what was saved
            before = "; nothing was saved" if args.command == "train" else ""
            what = _one_line(err) if str(err) else f"interrupted{before}"
            print(f"{prefix}: {what}", file=sys.stderr)
            return 130
    if stdout.failed:
        print(f"{prefix}: {_stdout_lost(args, stdout.failed)}", file=sys.stderr)
        return 1
    return code


if __name__ == "__main__":
    sys.exit(main())
