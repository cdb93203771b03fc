"""Evaluate a trained run on a labelled folder with ground-truth masks (`oste eval`).

CAMs: background-threshold sweep (best threshold reported, as WSSS papers do) for the original,
merged and enhanced CAMs; pseudo-labels: mIoU with unsure pixels left out, plus coverage;
segmentation: mIoU of the (tag-restricted) prediction. All numbers are fractions in 0..1.
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np

from oste_core.data import LabelledFolder, Sample, load_mask
from oste_core.engine.evaluate import ConfusionMatrix, ThresholdSweep
from oste_core.engine.predictor import Prediction, Predictor

CAM_LAYERS = ("cam", "merged_cam", "enhanced_cam")


class EvaluationError(RuntimeError):
    """Nothing to evaluate (no ground-truth masks); the message names the folder."""


class RunEvaluation:
    """Accumulates the metrics of predictions against their ground-truth masks, one image at a time."""

    def __init__(self, class_names: list[str]) -> None:
        self.class_names = list(class_names)
        n = len(self.class_names) + 1
        self.sweeps = {layer: ThresholdSweep(n) for layer in CAM_LAYERS}
        self.pseudo, self.seg, self.suggestion = ConfusionMatrix(n), ConfusionMatrix(n), ConfusionMatrix(n)
        self.images = 0

    def add(self, sample: Sample, prediction: Prediction) -> bool:
        """Count one prediction; False (and nothing counted) when the sample has no ground-truth mask."""
        if sample.gt_mask is None:
            return False
        gt = load_mask(sample.gt_mask, shape=prediction.seg.shape)
        for layer, sweep in self.sweeps.items():
            sweep.update(getattr(prediction, layer), prediction.tags, gt)
        self.pseudo.update(prediction.pseudo_label, gt)
        self.seg.update(prediction.seg, gt)
        self.suggestion.update(prediction.suggestion, gt)
        self.images += 1
        return True

    def report(self, skipped: list[str] = ()) -> dict:
        """The metrics as a JSON-ready dict (fractions in 0..1); ``skipped`` lists unreadable images."""
        results = {layer: sweep.result() for layer, sweep in self.sweeps.items()}
        cam_sweep = self.sweeps["cam"]
        best_cam = cam_sweep.matrices[cam_sweep.thresholds.index(results["cam"].best_threshold)]
        names = ["background", *self.class_names]
        present = self.suggestion.matrix.sum(axis=1) > 0  # classes in the ground truth
        per_class = {
            name: {"cam": _num(c), "pseudo": _num(p), "seg": _num(s), "suggestion": _num(g)}
            for name, c, p, s, g, seen in zip(names, best_cam.iou(), self.pseudo.iou(), self.seg.iou(),
                                              self.suggestion.iou(), present)
            if seen
        }
        return {
            "images": self.images,
            "skipped": list(skipped),
            "cam_miou": _num(results["cam"].best_miou),
            "cam_threshold": results["cam"].best_threshold,
            "merged_cam_miou": _num(results["merged_cam"].best_miou),
            "enhanced_cam_miou": _num(results["enhanced_cam"].best_miou),
            "enhanced_cam_threshold": results["enhanced_cam"].best_threshold,
            "pseudo_miou": _num(self.pseudo.miou()),
            "pseudo_coverage": _num(self.pseudo.coverage()),
            "seg_miou": _num(self.seg.miou()),
            "seg_pixel_accuracy": _num(self.seg.pixel_accuracy()),
            "suggestion_miou": _num(self.suggestion.miou()),
            "per_class": per_class,
        }


def evaluate_run(
    predictor: Predictor,
    folder: LabelledFolder,
    on_progress: Callable[[int, int], None] | None = None,
    cancel: Callable[[], bool] | None = None,
) -> dict:
    """Predict every image that has a ground-truth mask and accumulate the metrics."""
    with_gt = [s for s in folder.samples if s.gt_mask is not None]
    if not with_gt:
        raise EvaluationError(f"{folder.root}: no ground-truth masks (masks/<stem>.png or SegmentationClass/)")
    evaluation = RunEvaluation(predictor.class_names)
    subset = dataclasses.replace(folder, samples=with_gt, problems=[])
    for sample, prediction in predictor.predict_folder(subset, on_progress=on_progress, cancel=cancel):
        evaluation.add(sample, prediction)
    return evaluation.report(predictor.problems)


def _num(value: float) -> float:
    """NaN (class never seen) becomes 0.0 so the JSON stays standard."""
    return 0.0 if value is None or np.isnan(value) else float(value)


def format_report(report: dict) -> str:
    """A plain-text table of the headline numbers and per-class IoUs (percent)."""
    lines = [
        f"images evaluated: {report['images']}",
        f"{'':<22}{'mIoU':>8}",
        f"{'CAM':<22}{100 * report['cam_miou']:8.2f}   (best background threshold {report['cam_threshold']:.2f})",
        f"{'merged CAM (LEM)':<22}{100 * report['merged_cam_miou']:8.2f}",
        f"{'enhanced CAM (MAF)':<22}{100 * report['enhanced_cam_miou']:8.2f}   "
        f"(threshold {report['enhanced_cam_threshold']:.2f})",
        f"{'pseudo-labels (FBE)':<22}{100 * report['pseudo_miou']:8.2f}   "
        f"(coverage {100 * report['pseudo_coverage']:.1f}% of pixels labelled)",
        f"{'segmentation':<22}{100 * report['seg_miou']:8.2f}",
        f"{'suggestion (full mask)':<22}{100 * report['suggestion_miou']:8.2f}",
        "",
        f"{'class':<22}{'CAM':>8}{'pseudo':>8}{'seg':>8}{'suggest':>8}",
    ]
    for name, ious in report["per_class"].items():
        lines.append(f"{name:<22}{100 * ious['cam']:8.2f}{100 * ious['pseudo']:8.2f}{100 * ious['seg']:8.2f}"
                     f"{100 * ious['suggestion']:8.2f}")
    return "\n".join(lines)
