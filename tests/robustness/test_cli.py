"""Bad-input corpus: the command line's error surface and ``ncaflow predict`` (issue 21).

One bad input per case: the command exits non-zero with one line
``ncaflow <command>: <file/key>: <what>; <fix>`` on stderr, no traceback, and writes
nothing. Disk-full and read-only disks are simulated where the file is renamed into place.
"""

from __future__ import annotations

import errno
import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from ncaflow import cli as cli_module
from ncaflow.config import RunConfig, from_dict
from ncaflow.guard.io import save
from ncaflow.model.cascade import build_model
from tests.robustness.conftest import cli_process

GREY = {"input_channels": 1, "output_channels": 0, "hidden_channels": 4, "hidden_width": 8}
CONFIGS = {
    "classification": {
        "task": "classification",
        "model": {**GREY, "head": 2},
        "train": {"steps": [2]},
        "data": {"flag": "breastmnist", "readout": "head"},
    },
    "segmentation": {
        "task": "segmentation",
        "model": {"input_channels": 3, "output_channels": 1, "hidden_channels": 4,
                  "hidden_width": 8},
        "train": {"steps": [2]},
        "data": {"size": 16},
    },
    "growing": {"task": "growing", "model": {"hidden_channels": 4, "hidden_width": 8}},
}  # fmt: skip


@pytest.fixture
def work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder with one model per task, a good image and bad ones; the current directory."""
    monkeypatch.chdir(tmp_path)
    for name, raw in CONFIGS.items():
        cfg = from_dict(RunConfig, raw)
        save(build_model(cfg), cfg, tmp_path / name / "model.safetensors")
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(tmp_path / "good.png")
    Image.fromarray(np.zeros((20, 12, 3), np.uint8)).save(tmp_path / "wide.png")
    (tmp_path / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0\x00\x10JFIF" + b"\x00" * 40)
    (tmp_path / "notes.png").write_text("a text file with an image's name\n")
    (tmp_path / "sub").mkdir()
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(tmp_path / "sub" / "good.png")
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(tmp_path / "rgb.png")
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(CONFIGS["growing"]))
    for name, value in (("nan", np.nan), ("inf", np.inf)):
        pixels = np.zeros((28, 28), np.float32)
        pixels[3, 4] = value
        Image.fromarray(pixels, mode="F").save(tmp_path / f"{name}.tif")
    (tmp_path / "link.json").symlink_to(tmp_path / "classification" / "model.json")
    return tmp_path


OUT = "results/out.csv"

# case -> (argv, needles in the one stderr line, exit code or None for any non-zero)
CASES: dict[str, tuple[list[str], list[str], int | None]] = {
    "predict-missing-model": (
        ["predict", "--model", "absent", "good.png"],
        ["ncaflow predict: absent: no such model"],
        1,
    ),
    "predict-corrupt-jpeg": (
        ["predict", "--model", "classification", "good.png", "corrupt.jpg", "--out", OUT],
        ["ncaflow predict: corrupt.jpg: cannot read as an image", "PNG or JPEG"],
        1,
    ),
    "predict-not-an-image": (
        ["predict", "--model", "classification", "notes.png", "--out", OUT],
        ["notes.png: cannot read as an image"],
        1,
    ),
    "predict-missing-image": (
        ["predict", "--model", "classification", "absent.png", "--out", OUT],
        ["absent.png: no such image file"],
        1,
    ),
    "predict-growing-model": (
        ["predict", "--model", "growing", "good.png"],
        ["key 'task'", "'growing'", "ncaflow animate"],
        1,
    ),
    "predict-segmentation-without-out": (
        ["predict", "--model", "segmentation", "rgb.png"],
        ["--out", "folder"],
        1,
    ),
    "predict-segmentation-same-stems": (
        [
            "predict",
            "--model",
            "segmentation",
            "rgb.png",
            "sub/good.png",
            "good.png",
            "--out",
            "masks",
        ],
        ["masks: two images are named 'good'"],
        1,
    ),
    "predict-wrong-size-no-resize": (
        ["predict", "--model", "classification", "wide.png", "--no-resize", "--out", OUT],
        ["wide.png: 12x20 pixels, the model reads 28x28", "--no-resize"],
        1,
    ),
    "predict-classification-out-folder": (
        ["predict", "--model", "classification", "good.png", "--out", "masks"],
        ["masks: a classification model writes a table", ".csv or .json"],
        1,
    ),
    "predict-no-images": (
        ["predict", "--model", "classification"],
        ["ncaflow predict: the following arguments are required: images", "--help"],
        2,
    ),
    "predict-bad-format": (
        ["predict", "--model", "classification", "good.png", "--format", "xml"],
        ["ncaflow predict: argument --format: invalid choice: 'xml'"],
        2,
    ),
    "evaluate-missing-model": (
        ["evaluate", "--model", "absent/model.safetensors", "--out", "results/m.json"],
        ["ncaflow evaluate: absent/model.safetensors: no such model"],
        1,
    ),
    "evaluate-unknown-option": (
        ["evaluate", "--model", "classification", "--bogus", "1"],
        ["ncaflow evaluate: unrecognized arguments: --bogus 1", "ncaflow evaluate --help"],
        2,
    ),
    "evaluate-seed-not-a-number": (
        ["evaluate", "--model", "classification", "--seed", "abc"],
        ["ncaflow evaluate: argument --seed: invalid int value: 'abc'"],
        2,
    ),
    "unknown-command": (["frobnicate"], ["ncaflow: argument COMMAND: invalid choice"], 2),
    "check-missing-path": (["check", "absent"], ["ncaflow check: absent: no such file"], 1),
    "check-not-a-model": (["check", "good.png"], ["good.png: not a model file"], 1),
    "check-empty-folder": (["check", "sub"], ["sub: no model files"], 1),
    "info-missing-model": (["info", "absent"], ["ncaflow info: absent: no such model"], 1),
    "predict-mask-over-its-input": (
        ["predict", "--model", "segmentation", "--out", ".", "rgb.png"],
        ["rgb.png: the mask would overwrite that input image", "another --out"],
        1,
    ),
    "animate-every-zero": (
        ["animate", "--model", "growing", "--out", "results/a.gif", "--every", "0"],
        ["ncaflow animate: argument --every: 0 is below 1"],
        2,
    ),
    "animate-steps-negative": (
        ["animate", "--model", "growing", "--out", "results/a.gif", "--steps", "-3"],
        ["ncaflow animate: argument --steps: -3 is below 1"],
        2,
    ),
    "train-fold-without-folds": (
        ["train", "--config", "run.yaml", "--out", "results/t", "--fold", "1"],
        ["--fold 1 needs --folds"],
        2,
    ),
    # issue 26: sizes and names on the command line are checked before anything runs
    "animate-steps-too-many": (
        ["animate", "--model", "growing", "--out", "results/a.gif", "--steps", "100000000"],
        ["ncaflow animate: argument --steps: 100000000 is above 100000"],
        2,
    ),
    "export-steps-negative": (
        ["export", "c", "growing", "--out", "results/n.h", "--steps", "-5"],
        ["ncaflow export: argument --steps: -5 is below 1"],
        2,
    ),
    "export-steps-too-many": (
        ["export", "c", "growing", "--out", "results/n.h", "--steps", "1000000000"],
        ["ncaflow export: argument --steps: 1000000000 is above 100000"],
        2,
    ),
    "export-size-huge": (
        ["export", "c", "growing", "--out", "results/n.h", "--size", "100000x100000"],
        ["--size '100000x100000'", "integers 1..4096"],
        1,
    ),
    "uncertainty-no-rollouts": (
        ["uncertainty", "--model", "classification", "--out", "results/u.png", "--rollouts", "0"],
        ["ncaflow uncertainty: argument --rollouts: 0 is below 1"],
        2,
    ),
    "evaluate-device-tpu": (
        ["evaluate", "--model", "classification", "--device", "tpu"],
        ["ncaflow evaluate: --device: tpu is not a device", "use auto, cpu, cuda"],
        2,
    ),
    "train-device-tpu": (
        ["train", "--config", "run.yaml", "--out", "results/t", "--set", "train.device=tpu"],
        ["key 'train.device': tpu is not a device", "use auto, cpu, cuda"],
        2,
    ),
    "predict-nan-float-tiff": (
        ["predict", "--model", "classification", "nan.tif", "--out", OUT],
        ["nan.tif: NaN or Inf pixel values"],
        1,
    ),
    "predict-inf-float-tiff": (
        ["predict", "--model", "classification", "inf.tif", "--out", OUT],
        ["inf.tif: NaN or Inf pixel values"],
        1,
    ),
    "train-on-cuda-without-cuda": (
        ["train", "--config", "run.yaml", "--out", "results/t", "--set", "train.device=cuda"],
        ["key 'train.device'", "no CUDA device", "use 'auto' or 'cpu'"],
        2,
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_command_line_fails_cleanly(cli, work: Path, case: str) -> None:
    argv, needles, code = CASES[case]
    if "cuda" in case and torch.cuda.is_available():
        pytest.skip("the machine has CUDA")
    outcome = cli(*argv)
    before = (work / "rgb.png").read_bytes()
    absent = [work / OUT, work / "masks", work / "results" / "m.json", work / "results" / "t"]
    outcome.fails_cleanly(*needles, absent=[*absent, work / "results" / "a.gif"])
    assert (work / "rgb.png").read_bytes() == before
    if code is not None:
        assert outcome.code == code
    assert "Traceback" not in outcome.out


def failing_replace(code: int, message: str) -> Callable[[object, object], None]:
    def replace(src: object, dst: object) -> None:
        raise OSError(code, message)

    return replace


@pytest.mark.parametrize(
    ("code", "needle"),
    [
        (errno.ENOSPC, "disk full while writing {out}"),
        (errno.EROFS, "cannot write {out} (read-only); choose another --out"),
        (errno.EACCES, "cannot write {out} (read-only); choose another --out"),
    ],
)
def test_unwritable_output_is_one_line(
    cli, work: Path, monkeypatch: pytest.MonkeyPatch, code: int, needle: str
) -> None:
    monkeypatch.setattr("ncaflow.runtime.safe_io.os.replace", failing_replace(code, "simulated"))
    out = work / "results" / "table.csv"
    outcome = cli("predict", "--model", "classification", "good.png", "--out", out)
    outcome.fails_cleanly(f"ncaflow predict: {needle.format(out=out)}", absent=[out])
    assert list(out.parent.iterdir()) == []  # no temp file left behind


@pytest.mark.parametrize(
    ("command", "argv", "needle"),
    [
        ("train", ["--config", "c.yaml", "--out", "run"], "interrupted; nothing was saved"),
        ("evaluate", ["--model", "classification"], "ncaflow evaluate: interrupted"),
    ],
)
def test_interrupt_exits_130_with_one_line(
    cli, work: Path, monkeypatch: pytest.MonkeyPatch, command: str, argv: list[str], needle: str
) -> None:
    def interrupted(args: object) -> int:
        raise KeyboardInterrupt

    monkeypatch.setitem(cli_module.COMMANDS, command, interrupted)
    outcome = cli(command, *argv)
    outcome.fails_cleanly(needle)
    assert outcome.code == 130


def test_console_errors_are_one_line_in_a_subprocess(work: Path) -> None:
    """What ``python -m ncaflow.cli`` itself prints (interpreter, warnings) for a bad image."""
    outcome = cli_process("predict", "--model", "classification", "corrupt.jpg", cwd=work)
    outcome.fails_cleanly("ncaflow predict: corrupt.jpg: cannot read as an image")
    assert outcome.code == 1


def test_predict_resizes_with_a_one_line_warning(cli, work: Path) -> None:
    outcome = cli("predict", "--model", "classification", "wide.png")
    assert outcome.code == 0
    assert (
        outcome.err
        == "ncaflow predict: warning: wide.png: resized from 12x20 to the model's 28x28\n"
    )
    assert outcome.out.startswith("image,label,name,score_0,score_1\nwide.png,")


def test_disk_full_on_a_later_mask_leaves_no_masks(
    cli, work: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os

    calls: list[object] = []

    def replace_then_fail(src: str, dst: str) -> None:
        calls.append(dst)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        os.rename(src, dst)

    monkeypatch.setattr("ncaflow.runtime.safe_io.os.replace", replace_then_fail)
    masks = work / "masks"
    outcome = cli("predict", "--model", "segmentation", "rgb.png", "sub/good.png", "--out", masks)
    outcome.fails_cleanly(f"disk full while writing {masks / 'good.png'}")
    assert list(masks.iterdir()) == []


# -- issue 26: no output overwrites an input; stdout that cannot be written --------------------

_AGG = ["--task", "t", "--select", "val_loss", "--mode", "min"]
OVER_INPUT: dict[str, tuple[list[str], str]] = {  # case -> (argv, what the line calls it)
    "evaluate-over-model-json": (
        ["evaluate", "--model", "classification", "--out", "classification/model.json"],
        "the model's JSON",
    ),
    "evaluate-over-a-link-to-it": (
        ["evaluate", "--model", "classification", "--out", "link.json"],
        "the model's JSON",
    ),
    "predict-over-model-json": (
        ["predict", "--model", "classification", "good.png", "--out", "classification/model.json"],
        "the model's JSON",
    ),
    "animate-over-weights": (
        ["animate", "--model", "growing", "--out", "growing/model.safetensors"],
        "the model's weights",
    ),
    "uncertainty-over-weights": (
        ["uncertainty", "--model", "classification", "--out", "classification/model.safetensors"],
        "the model's weights",
    ),
    "export-over-model-json": (
        ["export", "c", "classification", "--out", "classification/model.json"],
        "the model's JSON",
    ),
    "export-report-over-model-json": (  # the footprint JSON goes beside the header
        ["export", "c", "classification", "--out", "classification/model.h"],
        "the model's JSON",
    ),
    "prepare-over-run-config": (
        ["prepare", "--config", "run.yaml", "--out", "run.yaml"],
        "the run config",
    ),
    "download-over-run-config": (
        ["download", "--config", "run.yaml", "--name", "g", "--out", "run.yaml"],
        "the run config",
    ),
    "aggregate-over-metrics": (
        ["aggregate", "m.json", *_AGG, "--csv", "m.json", "--md", "t.md", "--tex", "t.tex",
         "--folds-csv", "f.csv", "--best", "b.txt"],
        "an input metrics file",
    ),
    "train-over-its-config": (
        ["train", "--config", "classification/model.json", "--out", "classification"],
        "the run config",
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(OVER_INPUT))
def test_an_output_never_overwrites_an_input(cli, work: Path, case: str) -> None:
    argv, what = OVER_INPUT[case]
    (work / "m.json").write_text("{}")
    inputs = [*work.glob("*/model.*"), work / "run.yaml", work / "m.json", work / "good.png"]
    before = {p: p.read_bytes() for p in inputs}
    outcome = cli(*argv)
    outcome.fails_cleanly(f"is {what}", "an input of this command", "choose another --out")
    assert {p: p.read_bytes() for p in inputs} == before


def _closed_stdout() -> None:
    os.close(1)


@pytest.mark.parametrize("stdout", ["closed", "full"])
@pytest.mark.parametrize(
    "argv",
    [["predict", "--model", "classification", "good.png"], ["info", "classification"]],
    ids=["predict", "info"],
)
def test_a_result_that_cannot_reach_stdout_is_an_error(
    work: Path, argv: list[str], stdout: str
) -> None:
    """`ncaflow predict ... >&-` and `> /dev/full`: exit 1 with one line, not 0 with the
    table lost; the line does not tell to choose another --out when none was given."""
    if stdout == "closed":
        outcome = cli_process(*argv, cwd=work, preexec_fn=_closed_stdout)
    else:
        with open("/dev/full", "w") as full:
            outcome = cli_process(*argv, cwd=work, stdout=full, capture_output=False,
                                  stderr=subprocess.PIPE)  # fmt: skip
    outcome.fails_cleanly("cannot write to standard output", "the result is lost")
    assert outcome.code == 1
    if argv[0] == "info":
        assert "--out" not in outcome.err


PLANTED = {  # output -> (the path a link is planted at, the command that writes there)
    "figure": ("results/g.png", ["figures", "growth", "--model", "growing", "--out", "results/g"]),
    "mask": ("results/rgb.png", ["predict", "--model", "segmentation", "rgb.png", "--out",
                                 "results"]),
    "table": ("results/t.csv", ["predict", "--model", "classification", "good.png", "--out",
                                "results/t.csv"]),
}  # fmt: skip


@pytest.mark.parametrize("output", sorted(PLANTED))
def test_a_link_planted_at_an_output_is_replaced_not_followed(
    cli, work: Path, mirror: Path, monkeypatch: pytest.MonkeyPatch, output: str
) -> None:
    """A link at the path of a figure, a mask or a table (to a file elsewhere): the output
    replaces the link, and the file it pointed at keeps its bytes."""
    monkeypatch.setenv("NCAFLOW_DATA_MIRROR", str(mirror))
    (work / "results").mkdir()
    victim = work / "victim.bin"
    victim.write_bytes(b"precious")
    link, argv = PLANTED[output]
    (work / link).symlink_to(victim)
    outcome = cli(*argv)
    assert outcome.code == 0, outcome.err
    assert victim.read_bytes() == b"precious"
    assert (work / link).is_file() and not (work / link).is_symlink()
    assert ((work / link).stat().st_mode & 0o777) == 0o666 & ~_umask()


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
