"""ncaflow.predict: class tables and mask PNGs from image files, as evaluate computes them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from ncaflow.cli import main
from ncaflow.config import RunConfig, from_dict
from ncaflow.guard.io import load, save
from ncaflow.inference.evaluate import evaluate
from ncaflow.inference.predict import PredictWarning, predict
from ncaflow.model.cascade import build_model
from ncaflow.tasks.base import Task

LABELS = {"0": "malignant", "1": "normal, benign"}


def saved(tmp_path: Path, raw: dict[str, Any], meta: dict[str, Any] | None = None) -> Path:
    """An untrained model of config ``raw`` with random (not zero) weights, saved."""
    cfg = from_dict(RunConfig, raw)
    torch.manual_seed(0)
    model = build_model(cfg)
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.3)
    return save(model, cfg, tmp_path / "model" / "model.safetensors", meta=meta)


def classifier(tmp_path: Path, **data: Any) -> Path:
    model = {"input_channels": 1, "output_channels": 0, "hidden_channels": 4, "hidden_width": 8}
    raw = {
        "task": "classification",
        "model": {**model, "head": 2},
        "train": {"steps": [4]},
        "data": {"flag": "breastmnist", "readout": "head", **data},
    }
    return saved(tmp_path, raw, meta={"labels": LABELS})


def segmenter(tmp_path: Path) -> Path:
    model = {"input_channels": 3, "output_channels": 1, "hidden_channels": 4, "hidden_width": 8}
    raw = {"task": "segmentation", "model": model, "train": {"steps": [4]}, "data": {"size": 16}}
    return saved(tmp_path, raw)


def png(path: Path, array: np.ndarray) -> Path:
    Image.fromarray(array).save(path)
    return path


def test_predict_agrees_with_evaluate(tmp_path: Path, mirror: Path) -> None:
    """The test split's images as PNG files, predicted in their order, give the exact
    accuracy and AUC that evaluate reports (stochastic rollouts, two of them, and mirrored
    views: the same fire masks only if predict runs the task's own evaluation readout)."""
    from medmnist.evaluator import getACC, getAUC

    # eval_batch 16: several batches, each below the size from which perception is compiled
    path = classifier(tmp_path, eval_rollouts=2, eval_hflip=True, eval_batch=16)
    where = [f"data.root={tmp_path / 'raw'}", f"data.mirror={mirror}"]
    metrics = evaluate(path, splits=("test",), overrides=where)
    from ncaflow.guard.io import config_of
    from ncaflow.inference.evaluate import with_overrides
    from ncaflow.tasks import get_task

    task = get_task("classification")(config=with_overrides(config_of(load(path)), where))
    task.setup()
    x, y = task.splits["test"]  # type: ignore[attr-defined]
    images = [
        png(tmp_path / f"{i:03d}.png", (x[i, 0] * 255).round().byte().numpy())
        for i in range(len(x))
    ]
    results = predict(path, images)
    scores = np.array([r.scores for r in results])
    assert getACC(y.numpy(), scores, "binary-class") == metrics["test_acc"]
    assert getAUC(y.numpy(), scores, "binary-class") == metrics["test_auc"]
    assert [r.label for r in results] == scores.argmax(1).tolist()
    assert {r.name for r in results} <= set(LABELS.values())


def test_cli_prints_or_writes_the_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = classifier(tmp_path)
    rng = np.random.default_rng(0)
    grey = png(tmp_path / "grey.png", rng.integers(0, 256, (28, 28), dtype=np.uint8))
    rgb = png(tmp_path / "rgb.png", rng.integers(0, 256, (28, 28, 3), dtype=np.uint8))
    expected = predict(path, [grey, rgb])
    assert main(["predict", "--model", str(path.parent), str(grey), str(rgb)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "image,label,name,score_0,score_1"
    assert lines[1].startswith(f"{grey},{expected[0].label},")
    table = tmp_path / "out" / "table.json"
    assert main(["predict", "--model", str(path), str(grey), str(rgb), "--out", str(table)]) == 0
    rows = json.loads(table.read_text())
    assert [r["label"] for r in rows] == [e.label for e in expected]
    assert rows[1]["score_1"] == pytest.approx(expected[1].scores[1], abs=1e-6)
    # an RGB file fed to a grey model is converted to grey, as Pillow's "L" does
    as_grey = png(tmp_path / "as_grey.png", np.asarray(Image.open(rgb).convert("L")))
    assert predict(path, [grey, as_grey])[1].scores == expected[1].scores


def test_segmentation_masks_match_the_rollout(tmp_path: Path) -> None:
    path = segmenter(tmp_path)
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    file = png(tmp_path / "polyp.png", image)
    (result,) = predict(path, [file], out=tmp_path / "masks", seed=3)
    model = load(path)
    x = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255
    out = model(Task.seed_state(x, 8), 4, generator=torch.Generator().manual_seed(3))
    want = (out[0, 3] > 0).numpy()
    assert result.mask_path == tmp_path / "masks" / "polyp.png"
    written = np.asarray(Image.open(result.mask_path))
    assert written.dtype == np.uint8 and set(np.unique(written)) <= {0, 255}
    assert np.array_equal(written > 127, want)
    assert 0 < want.mean() < 1  # a mask with both classes, so the comparison means something


def test_other_sizes_are_resized_with_a_warning_or_refused(tmp_path: Path) -> None:
    path = segmenter(tmp_path)
    file = png(tmp_path / "wide.png", np.zeros((12, 20, 3), dtype=np.uint8))
    with pytest.warns(PredictWarning, match=r"wide\.png: resized from 20x12 to the model's 16x16"):
        (result,) = predict(path, [file], out=tmp_path / "masks")
    assert Image.open(tmp_path / "masks" / "wide.png").size == (20, 12)  # the image's own size
    assert result.size == (20, 12)
    with pytest.raises(ValueError, match=r"wide\.png: 20x12 pixels, the model reads 16x16"):
        predict(path, [file], out=tmp_path / "masks2", resize=False)
    assert not (tmp_path / "masks2").exists()


def test_bad_images_and_tasks_without_images_are_refused(tmp_path: Path) -> None:
    path = classifier(tmp_path)
    good = png(tmp_path / "good.png", np.zeros((28, 28), dtype=np.uint8))
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0" + b"\0" * 64)
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    for bad, message in [
        (broken, "broken.jpg: cannot read as an image"),
        (text, "notes.png: cannot read as an image"),
        (tmp_path / "absent.png", "absent.png: no such image file"),
    ]:
        with pytest.raises(ValueError, match=message):
            predict(path, [good, bad])
    raw = {"task": "growing", "model": {"hidden_channels": 4, "hidden_width": 8}}
    grower = saved(tmp_path / "g", raw)
    with pytest.raises(ValueError, match=r"task is 'growing'.*ncaflow animate"):
        predict(grower, [good])
    seg = segmenter(tmp_path / "s")
    twins = [png(d / "x.png", np.zeros((16, 16, 3), np.uint8)) for d in (tmp_path / "g", tmp_path)]
    with pytest.raises(ValueError, match="two images are named 'x'"):
        predict(seg, twins, out=tmp_path / "m")
    assert not (tmp_path / "m").exists()


def test_predict_reads_16_bit_grey_as_training_does(tmp_path: Path) -> None:
    """A 16-bit PNG is scaled by 65535 (data.images.image_array), not clipped to 8 bits."""
    from ncaflow.data.images import image_array
    from ncaflow.inference.predict import read_image

    values = np.linspace(0, 60000, 16, dtype=np.uint16).reshape(4, 4)
    path = tmp_path / "wide.png"
    Image.fromarray(values).save(path)
    x, own = read_image(path, channels=1, size=4)
    with Image.open(path) as im:
        want = image_array(im, channels=1, size=(4, 4))
    assert own == (4, 4) and np.allclose(x.numpy(), want)
    assert 0.9 < float(x.max()) < 0.93  # 60000 / 65535
