"""train.reproducible: the same bytes whatever kernels the CPU would pick; what model.json,
`ncaflow check` and `ncaflow info` say about it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ncaflow.cli import main
from ncaflow.config import RunConfig
from ncaflow.guard.io import save, verify
from ncaflow.model.nca import NCA
from ncaflow.runtime.reproducible import (
    ENVIRONMENT,
    MARKER,
    environment,
    guarantee,
    missing,
    wanted,
)

REPO = Path(__file__).resolve().parents[2]
TINY = [
    *("--config", str(REPO / "config" / "runs" / "growing.yaml")),
    *("--set", "train.iterations=6", "--set", "train.eval_every=6"),
    *("--set", "train.checkpoint_every=6", "--set", "train.progress=false"),
    *("--set", "data.size=16", "--set", "data.pad=4", "--set", "data.pool_size=8"),
    *("--set", "model.hidden_width=32", "--set", "train.batch_size=2"),
    *("--set", "train.steps=[8, 12]"),
]


def _clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without the reproducible variables (conftest set them),
    plus ``extra``: what a shell on another CPU would start ``ncaflow train`` with."""
    env = {k: v for k, v in os.environ.items() if k not in {*ENVIRONMENT, MARKER}}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO / "src"), env.get("PYTHONPATH")]))
    env["OMP_NUM_THREADS"] = "1"
    return {**env, **extra}


def _train(out: Path, env: dict[str, str], *extra: str) -> tuple[bytes, dict[str, object]]:
    """Run `ncaflow train` (the console entry: it re-executes itself) in a new process."""
    cmd = [sys.executable, "-m", "ncaflow.cli", "train", *TINY, "--out", str(out), *extra]
    done = subprocess.run(  # in the test's folder: the data cache (data.root) goes there too
        cmd, env=env, cwd=out.parent, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    meta = json.loads((out / "model.json").read_text())["meta"]
    return (out / "model.safetensors").read_bytes(), meta["environment"]


@pytest.mark.usefixtures("mirror")
def test_forced_isa_levels_give_the_same_bytes_in_reproducible_mode(tmp_path: Path) -> None:
    """An AVX-512 CPU's kernels (ATen AVX-512, MKL's AVX-512 branch) and a plain CPU's
    (ATen default, MKL's own pick) give the same weights in reproducible mode; in fast
    mode the plain CPU's differ, so the forced levels really change the kernels."""
    wide = _clean_env(ATEN_CPU_CAPABILITY="avx512", MKL_CBWR="AVX512")
    plain = _clean_env(ATEN_CPU_CAPABILITY="default")
    a, env_a = _train(tmp_path / "wide", wide, "--set", "train.reproducible=true")
    b, env_b = _train(tmp_path / "plain", plain, "--set", "train.reproducible=true")
    fast, env_fast = _train(tmp_path / "fast", plain)  # the default: each CPU's own kernels
    assert a == b
    assert a != fast
    assert env_a == env_b
    assert env_a["mode"] == "reproducible" and env_a["mkl_branch"] == "COMPATIBLE"
    assert env_a["cpu_capability"] == wanted()["ATEN_CPU_CAPABILITY"].upper()
    assert (env_fast["mode"], env_fast["cpu_capability"]) == ("fast", "DEFAULT")
    assert env_a["threads"] == 1


def test_a_process_without_the_variables_refuses_a_reproducible_cpu_run() -> None:
    """The library path: torch started with its own kernels, so train() cannot keep the
    promise and says how to; apply() after torch started says so too."""
    code = (
        "import torch\n"
        "from ncaflow.runtime.reproducible import apply, require\n"
        "require(reproducible=False, device_type='cpu')\n"
        "require(reproducible=True, device_type='cuda')\n"
        "try:\n"
        "    require(reproducible=True, device_type='cpu')\n"
        "except Exception as err:\n"
        "    print(type(err).__name__, err)\n"
        "try:\n"
        "    apply()\n"
        "except RuntimeError as err:\n"
        "    print('apply:', err)\n"
    )
    env = _clean_env(ATEN_CPU_CAPABILITY="default")
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("ConfigError key 'train.reproducible': true, but")
    assert "ncaflow.runtime.reproducible.apply()" in lines[0] and "MKL_CBWR=COMPATIBLE" in lines[0]
    assert lines[1].startswith("apply: ncaflow.runtime.reproducible.apply() was called after torch")


def test_apply_before_torch_gives_the_reproducible_kernels() -> None:
    """The library path done right: apply() before torch starts, as `ncaflow train` does by
    re-executing itself. (The test process itself runs each CPU's own kernels: pinning ATen
    to AVX2 in-process broke the compiled CPU step's equality with the reference.)"""
    code = (
        "from ncaflow.runtime.reproducible import apply\n"
        "apply()\n"
        "import torch\n"
        "from ncaflow.runtime.reproducible import in_effect, missing, require\n"
        "assert not missing() and in_effect()\n"
        "require(reproducible=True, device_type='cpu')\n"
        "print('pinned')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], env=_clean_env(), capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "pinned"


def _saved(tmp_path: Path, meta: dict[str, object]) -> Path:
    config = RunConfig(task="growing")
    model = NCA(config=config.model)
    save(model, config, tmp_path / "model.safetensors", meta=meta)
    return tmp_path


def test_old_model_files_load_and_say_their_environment_is_unknown(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A model.json from before meta.environment still verifies; check and info say that
    its guarantee is unknown."""
    folder = _saved(tmp_path, {"seed": "centre"})
    assert "environment" not in verify(folder).meta
    assert main(["check", str(folder)]) == 0
    assert "1 environment not recorded" in capsys.readouterr().out
    assert main(["info", str(folder)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["environment"] is None
    assert info["guarantee"].startswith("environment not recorded")


def test_check_and_info_name_the_guarantee_of_a_recorded_environment(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    env = environment(reproducible=True, device_type="cpu")
    env |= {"cpu_capability": "AVX2", "mkl_branch": "COMPATIBLE"}  # what apply() pins
    folder = _saved(tmp_path, {"environment": env})
    assert main(["check", str(folder)]) == 0
    out = capsys.readouterr().out
    assert "1 reproducible: same bytes on any x86-64 CPU with AVX2 and FMA" in out
    assert main(["info", str(folder)]) == 0
    assert json.loads(capsys.readouterr().out)["environment"] == env


@pytest.mark.parametrize(
    ("env", "start"),
    [
        ({"mode": "reproducible", "device": "cpu", "cpu_capability": "AVX2"}, "reproducible mode"),
        ({"mode": "reproducible", "device": "cpu", "cpu_capability": "DEFAULT"}, "reproducible"),
        ({"mode": "fast", "device": "cpu", "mkl_branch": "COMPATIBLE"}, "fast mode"),
        ({"mode": "reproducible", "device": "cuda"}, "trained on cuda"),
        ([1, 2], "environment not recorded"),
        ({"mode": {"nested": 1}, "device": ["cpu"]}, "trained on ?"),
    ],
)
def test_guarantee_comes_from_known_values_only(env: object, start: str) -> None:
    """A guarantee is claimed only for the reproducible kernels; anything else in a file
    (someone else's data) gives a weaker line, never an error."""
    line = guarantee({"environment": env})
    assert line.startswith(start), line
    assert not line.startswith("reproducible:")


def test_other_processors_need_no_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    """On Arm there is nothing to pin: no re-execution, no refusal; the guarantee that
    model.json then carries is the weak one (its kernels are not AVX2 + COMPATIBLE)."""
    import platform

    from ncaflow.runtime.reproducible import in_effect

    monkeypatch.setattr(platform, "machine", lambda: "arm64")
    assert wanted() == {} and missing({}) == {}
    assert in_effect()
    line = guarantee({"environment": {"mode": "reproducible", "device": "cpu"}})
    assert "same bytes only on a CPU that picks the same kernels" in line


def test_reproducible_mode_refuses_a_compiled_cpu_step(tmp_path: Path) -> None:
    """torch.compile writes CPU code for the CPU it finds, out of reach of the pinned
    variables (and under ATen's AVX2 kernels it did not even match the reference step):
    refused in one line before anything is written."""
    from helpers import digits_config

    from ncaflow import train
    from ncaflow.config import ConfigError

    config = digits_config(reproducible=True)
    with pytest.raises(ConfigError, match="compiles its own CPU code"):
        train(config, tmp_path / "out", impl="compiled")
    assert not (tmp_path / "out").exists()
