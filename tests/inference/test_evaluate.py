"""Evaluation: rollouts and mirrored images averaged, ensembles of saved models."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers import evaluate, run_config, write_medmnist

from ncaflow.config import ConfigError
from ncaflow.training.train import train

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def test_eval_rollouts_average_scores(tmp_path: Path) -> None:
    """data.eval_rollouts=n scores every image by the mean of n stochastic rollouts."""
    mirror = tmp_path / "mirror"
    write_medmnist(mirror / "medmnist" / "breastmnist.npz", size=28)
    model = {"input_channels": 1, "output_channels": 0, "hidden_channels": 6, "head": 2}
    raw = {"task": "classification", "model": model, "data": {"readout": "head"}}
    cfg = run_config(raw, tmp_path, mirror, iterations=20, batch_size=8, steps=[6], eval_every=20)
    train(cfg, tmp_path / "run")
    one = evaluate(tmp_path / "run", splits=("val",))
    four = evaluate(tmp_path / "run", splits=("val",), overrides=["data.eval_rollouts=4"])
    again = evaluate(tmp_path / "run", splits=("val",), overrides=["data.eval_rollouts=4"])
    assert four == again  # seeded
    assert four["val_loss"] != one["val_loss"]  # other rollouts, averaged
    with pytest.raises(ConfigError, match=r"data\.eval_rollouts"):
        evaluate(tmp_path / "run", overrides=["data.eval_rollouts=0"])


def test_eval_hflip_averages_the_image_and_its_mirror(tmp_path: Path) -> None:
    """data.eval_hflip scores every image by the mean over it and its left-right mirror: with
    no fire-mask randomness, its loss is the mean of the losses on the data and on the data
    mirrored on disk."""
    mirror, flipped = tmp_path / "mirror", tmp_path / "flipped"
    write_medmnist(mirror / "medmnist" / "breastmnist.npz", size=28)
    data = dict(np.load(mirror / "medmnist" / "breastmnist.npz"))
    for key in [k for k in data if k.endswith("_images")]:
        data[key] = data[key][:, :, ::-1]
    (flipped / "medmnist").mkdir(parents=True)
    np.savez(flipped / "medmnist" / "breastmnist.npz", **data)
    model = {"input_channels": 1, "output_channels": 0, "hidden_channels": 6, "head": 2}
    model["fire_rate"] = 1.0
    raw = {"task": "classification", "model": model, "data": {"readout": "head"}}
    cfg = run_config(raw, tmp_path, mirror, iterations=20, batch_size=8, steps=[6], eval_every=20)
    train(cfg, tmp_path / "run")
    plain = evaluate(tmp_path / "run", splits=("val",))
    mirrored = evaluate(
        tmp_path / "run",
        splits=("val",),
        overrides=[f"data.mirror={flipped}", f"data.root={tmp_path / 'cache-flipped'}"],
    )
    both = evaluate(tmp_path / "run", splits=("val",), overrides=["data.eval_hflip=true"])
    assert plain["val_loss"] != pytest.approx(mirrored["val_loss"], rel=1e-6)
    expected = (plain["val_loss"] + mirrored["val_loss"]) / 2
    assert both["val_loss"] == pytest.approx(expected, rel=1e-5)


def test_ensemble_averages_its_members_scores(tmp_path: Path) -> None:
    """`ncaflow evaluate --model A --model B`: the class scores averaged over both members.
    With no fire-mask randomness and a head readout, the ensemble's loss is the mean of the
    members' losses and its parameters their sum; members of other data are refused."""
    mirror = tmp_path / "mirror"
    write_medmnist(mirror / "medmnist" / "breastmnist.npz", size=28)
    model = {"input_channels": 1, "output_channels": 0, "hidden_channels": 6, "head": 2}
    model["fire_rate"] = 1.0
    raw = {"task": "classification", "model": model, "data": {"readout": "head"}}
    runs = [tmp_path / "a", tmp_path / "b"]
    for seed, run in enumerate(runs):
        cfg = run_config(raw, tmp_path, mirror, iterations=10, batch_size=8, steps=[6], seed=seed)
        train(cfg, run)
    single = [evaluate(run, splits=("val",)) for run in runs]
    both = evaluate(runs, splits=("val",))
    assert single[0]["val_loss"] != pytest.approx(single[1]["val_loss"], rel=1e-6)
    expected = (single[0]["val_loss"] + single[1]["val_loss"]) / 2
    assert both["val_loss"] == pytest.approx(expected, rel=1e-5)
    assert both["parameters"] == single[0]["parameters"] + single[1]["parameters"]
    assert both["members"] == [str(run) for run in runs]

    voting = {**model, "output_channels": 2, "head": 0}  # per-pixel votes: other scores
    other = {"task": "classification", "model": voting, "data": {"readout": "vote"}}
    cfg = run_config(other, tmp_path, mirror, iterations=2, batch_size=8, steps=[6])
    train(cfg, tmp_path / "c")
    with pytest.raises(
        ConfigError, match=r"must share task, data\.flag, data\.size and data\.readout"
    ):
        evaluate([runs[0], tmp_path / "c"], splits=("val",))


def test_adaptive_steps_report_the_mean_steps_run(tmp_path: Path) -> None:
    """model.adaptive_steps: evaluation stops each rollout by the rule and reports the mean
    steps run."""
    mirror = tmp_path / "mirror"
    write_medmnist(mirror / "medmnist" / "breastmnist.npz", size=28, n=(16, 8, 8))
    rule = {"tol": 1e9, "patience": 3, "min_steps": 2}  # every step is quiet: stop at 3
    model = {"input_channels": 1, "output_channels": 0, "hidden_channels": 4, "head": 2}
    model["adaptive_steps"] = rule
    raw = {"task": "classification", "model": model, "data": {"readout": "head"}}
    cfg = run_config(raw, tmp_path, mirror, iterations=2, batch_size=4, steps=[6], eval_every=2)
    train(cfg, tmp_path / "run")
    adaptive = evaluate(tmp_path / "run", splits=("val",))
    assert adaptive["val_mean_steps"] == 3.0
