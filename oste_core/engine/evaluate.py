"""Segmentation metrics: confusion matrix, IoU / mIoU, pixel accuracy, pseudo-label coverage,
and the CAM background-threshold sweep that WSSS papers report.

Conventions: labels are 0 (background), 1..K (classes) and 255 (void / unsure). ``num_classes``
of the metrics counts every label value *including background* (K + 1). Pixels whose ground
truth is 255 are ignored. Predicted 255 pixels (pseudo-labels may leave pixels unsure) are left
out of the confusion matrix, hence out of IoU and pixel accuracy, but count against
``coverage``: the share of non-void ground-truth pixels that received a label. mIoU is the mean
IoU over the classes that occur in the ground truth or the prediction (background included),
as in the PASCAL VOC protocol when accumulated over a whole data set. All numbers are fractions
in 0..1; NaN when nothing was counted.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

from oste_core.labels import UNSURE

DEFAULT_THRESHOLDS: tuple[float, ...] = tuple(round(0.05 * i, 2) for i in range(1, 20))  # 0.05 .. 0.95


class ConfusionMatrix:
    """Accumulates ``matrix[gt, pred]`` pixel counts over any number of images."""

    def __init__(self, num_classes: int) -> None:
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1 (background included), got {num_classes}")
        self.num_classes = num_classes
        self.matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
        self.valid_pixels = 0  # non-void ground-truth pixels seen
        self.labelled_pixels = 0  # of those, pixels with a non-void prediction

    def update(self, pred: np.ndarray, gt: np.ndarray) -> None:
        """Add one image (or a batch): integer arrays of the same shape."""
        pred, gt = np.asarray(pred), np.asarray(gt)
        if pred.shape != gt.shape:
            raise ValueError(f"prediction shape {pred.shape} differs from ground-truth shape {gt.shape}")
        n = self.num_classes
        valid = gt != UNSURE
        labelled = valid & (pred != UNSURE)
        for name, values in (("ground truth", gt[valid]), ("prediction", pred[labelled])):
            if values.size and (values.min() < 0 or values.max() >= n):
                raise ValueError(f"{name} has label {values.max()} outside 0..{n - 1} (and 255 for void)")
        self.valid_pixels += int(valid.sum())
        self.labelled_pixels += int(labelled.sum())
        index = gt[labelled].astype(np.int64) * n + pred[labelled].astype(np.int64)
        self.matrix += np.bincount(index, minlength=n * n).reshape(n, n)

    def iou(self) -> np.ndarray:
        """Per-class IoU = TP / (TP + FP + FN); NaN for classes absent from ground truth and prediction."""
        true_positive = np.diag(self.matrix).astype(np.float64)
        union = self.matrix.sum(0) + self.matrix.sum(1) - true_positive
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(union > 0, true_positive / union, np.nan)

    def miou(self) -> float:
        """Mean IoU over the classes present in ground truth or prediction (background included)."""
        values = self.iou()
        return float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")

    def pixel_accuracy(self) -> float:
        """Correct / counted pixels (void ground truth and unsure predictions left out)."""
        total = self.matrix.sum()
        return float(np.trace(self.matrix) / total) if total else float("nan")

    def coverage(self) -> float:
        """Share of non-void ground-truth pixels that have a non-255 predicted label."""
        return self.labelled_pixels / self.valid_pixels if self.valid_pixels else float("nan")

    def summary(self, class_names: Sequence[str] | None = None) -> dict:
        """Plain-number report: miou, pixel_accuracy, coverage and per-class iou (keyed by name if given)."""
        names = ["background", *class_names] if class_names is not None else [str(i) for i in range(self.num_classes)]
        return {
            "miou": self.miou(),
            "pixel_accuracy": self.pixel_accuracy(),
            "coverage": self.coverage(),
            "iou": {name: float(value) for name, value in zip(names, self.iou())},
        }


def _top_tagged_class(cams: np.ndarray, tags: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Per pixel: the highest CAM score among the tagged classes and that class (1-based)."""
    tagged = sorted(set(int(t) for t in tags))
    if not tagged:
        shape = cams.shape[1:]
        return np.zeros(shape, dtype=np.float32), np.zeros(shape, dtype=np.uint8)
    if tagged[0] < 1 or tagged[-1] > cams.shape[0]:
        raise ValueError(f"tags must be 1-based class indices in 1..{cams.shape[0]}, got {tagged}")
    scores = cams[[t - 1 for t in tagged]]
    best = scores.argmax(axis=0)
    return scores.max(axis=0), np.asarray(tagged, dtype=np.uint8)[best]


def cam_to_label(cams: np.ndarray, tags: Sequence[int], bg_threshold: float) -> np.ndarray:
    """(K, H, W) per-class normalised CAMs -> (H, W) uint8 labels.

    Only the tagged classes (1-based indices) compete; a pixel is background when no tagged
    CAM exceeds ``bg_threshold``, else the tagged class with the highest CAM.
    """
    score, label = _top_tagged_class(np.asarray(cams, dtype=np.float32), tags)
    return np.where(score > bg_threshold, label, 0).astype(np.uint8)


@dataclass
class SweepResult:
    best_threshold: float
    best_miou: float
    mious: dict[float, float]  # threshold -> mIoU


class ThresholdSweep:
    """One `ConfusionMatrix` per background threshold, filled image by image."""

    def __init__(self, num_classes: int, thresholds: Sequence[float] = DEFAULT_THRESHOLDS) -> None:
        self.thresholds = tuple(float(t) for t in thresholds)
        self.matrices = [ConfusionMatrix(num_classes) for _ in self.thresholds]

    def update(self, cams: np.ndarray, tags: Sequence[int], gt: np.ndarray) -> None:
        score, label = _top_tagged_class(np.asarray(cams, dtype=np.float32), tags)
        for threshold, matrix in zip(self.thresholds, self.matrices):
            matrix.update(np.where(score > threshold, label, 0), gt)

    def result(self) -> SweepResult:
        mious = {t: m.miou() for t, m in zip(self.thresholds, self.matrices)}
        best = max(mious, key=lambda t: -np.inf if np.isnan(mious[t]) else mious[t])
        return SweepResult(best, mious[best], mious)


def sweep_cam_thresholds(
    items: Iterable[tuple[np.ndarray, Sequence[int], np.ndarray]],
    num_classes: int,
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
) -> SweepResult:
    """Background-threshold sweep over (cams (K,H,W), 1-based tags, gt (H,W)) items; best by mIoU."""
    sweep = ThresholdSweep(num_classes, thresholds)
    for cams, tags, gt in items:
        sweep.update(cams, tags, gt)
    return sweep.result()
