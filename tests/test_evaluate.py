"""Metrics against hand-computed values on tiny arrays."""
from __future__ import annotations

import math

import numpy as np
import pytest

from oste_core.engine.evaluate import (
    DEFAULT_THRESHOLDS,
    ConfusionMatrix,
    ThresholdSweep,
    cam_to_label,
    sweep_cam_thresholds,
)

GT = np.array([[0, 0, 1], [1, 2, 2]])
PRED = np.array([[0, 1, 1], [1, 2, 0]])


def test_hand_computed_confusion_matrix() -> None:
    cm = ConfusionMatrix(3)
    cm.update(PRED, GT)
    assert cm.matrix.tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    # IoU: bg 1/(1+1+1), class 1 2/(2+1), class 2 1/(1+1)
    assert np.allclose(cm.iou(), [1 / 3, 2 / 3, 1 / 2])
    assert cm.miou() == pytest.approx(0.5)
    assert cm.pixel_accuracy() == pytest.approx(4 / 6)
    assert cm.coverage() == 1.0


def test_accumulates_over_images() -> None:
    cm = ConfusionMatrix(3)
    cm.update(PRED, GT)
    cm.update(GT, GT)
    assert cm.matrix.sum() == 12 and np.trace(cm.matrix) == 10


def test_void_ground_truth_is_ignored() -> None:
    gt = np.where(np.array([[1, 0, 0], [0, 0, 0]], bool), 255, GT)
    cm = ConfusionMatrix(3)
    cm.update(PRED, gt)  # the pixel (0, 0) is void: it does not count at all
    assert cm.matrix.tolist() == [[0, 1, 0], [0, 2, 0], [1, 0, 1]]
    assert cm.valid_pixels == 5 and cm.coverage() == 1.0


def test_unsure_predictions_count_into_coverage_only() -> None:
    pred = PRED.copy()
    pred[0, 1] = 255  # the wrong "1" on a background pixel becomes unsure
    pred[1, 2] = 255  # the wrong "0" on a class-2 pixel becomes unsure
    cm = ConfusionMatrix(3)
    cm.update(pred, GT)
    assert cm.matrix.tolist() == [[1, 0, 0], [0, 2, 0], [0, 0, 1]]
    assert cm.miou() == 1.0 and cm.pixel_accuracy() == 1.0
    assert cm.coverage() == pytest.approx(4 / 6)


def test_miou_skips_absent_classes() -> None:
    cm = ConfusionMatrix(5)
    cm.update(PRED, GT)
    iou = cm.iou()
    assert math.isnan(iou[3]) and math.isnan(iou[4])
    assert cm.miou() == pytest.approx(0.5)
    summary = cm.summary(["a", "b", "c", "d"])
    assert summary["miou"] == pytest.approx(0.5) and summary["iou"]["a"] == pytest.approx(2 / 3)
    assert math.isnan(ConfusionMatrix(2).miou())


def test_bad_input_is_rejected() -> None:
    cm = ConfusionMatrix(3)
    with pytest.raises(ValueError, match="shape"):
        cm.update(PRED[:, :2], GT)
    with pytest.raises(ValueError, match="prediction has label 7"):
        cm.update(np.full_like(GT, 7), GT)


def test_cam_to_label_uses_tagged_classes_only() -> None:
    cams = np.zeros((3, 1, 4), np.float32)
    cams[0] = [[0.9, 0.1, 0.6, 0.2]]
    cams[1] = [[0.2, 0.8, 0.7, 0.1]]
    cams[2] = [[1.0, 1.0, 1.0, 1.0]]  # not tagged: ignored
    assert cam_to_label(cams, [1, 2], 0.3).tolist() == [[1, 2, 2, 0]]
    assert cam_to_label(cams, [1], 0.3).tolist() == [[1, 0, 1, 0]]
    assert cam_to_label(cams, [], 0.3).tolist() == [[0, 0, 0, 0]]
    with pytest.raises(ValueError, match="1-based"):
        cam_to_label(cams, [0], 0.3)


def test_threshold_sweep_finds_the_best_threshold() -> None:
    cam = np.array([[0.1, 0.3, 0.5, 0.7, 0.9]] * 2, np.float32)[None]
    gt = (cam[0] >= 0.5).astype(np.uint8)  # perfect for any threshold in [0.3, 0.5)
    result = sweep_cam_thresholds([(cam, [1], gt)], num_classes=2)
    assert list(result.mious) == list(DEFAULT_THRESHOLDS) and len(DEFAULT_THRESHOLDS) == 19
    assert DEFAULT_THRESHOLDS[0] == 0.05 and DEFAULT_THRESHOLDS[-1] == 0.95
    assert 0.3 <= result.best_threshold < 0.5 and result.best_miou == 1.0
    assert result.mious[0.05] < 1.0 and result.mious[0.95] < 1.0


def test_sweep_matches_cam_to_label() -> None:
    rng = np.random.default_rng(0)
    items = [(rng.random((3, 8, 8), dtype=np.float32), [1, 3], rng.integers(0, 4, (8, 8))) for _ in range(3)]
    sweep = ThresholdSweep(4, thresholds=(0.2, 0.6))
    for cams, tags, gt in items:
        sweep.update(cams, tags, gt)
    for threshold, matrix in zip(sweep.thresholds, sweep.matrices):
        direct = ConfusionMatrix(4)
        for cams, tags, gt in items:
            direct.update(cam_to_label(cams, tags, threshold), gt)
        assert np.array_equal(direct.matrix, matrix.matrix)
