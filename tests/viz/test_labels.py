"""Figure labels are words, not config keys."""

from __future__ import annotations

from ncaflow.viz.labels import bounds, cell_label, metric_label


def test_labels_are_words() -> None:
    assert metric_label("val_loss") == "validation loss"
    assert metric_label("test_dice") == "test Dice"
    assert metric_label("val_pixel_acc") == "validation pixel accuracy"
    assert metric_label("test_new_metric") == "test new metric"
    assert cell_label("hidden~12") == "hidden channels = 12"
    assert cell_label("hidden~8_fire~0.5_percept~sobel") == (
        "hidden channels = 8, fire rate = 0.5, perception = sobel"
    )
    assert bounds("test_dice") == (0.0, 1.0) and bounds("val_loss") is None
