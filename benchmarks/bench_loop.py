"""Corrections that count: how much an annotator's corrections lift the other suggestions, and clicks per image.

    python benchmarks/bench_loop.py ../shared/data/real-dev/mix --seeds 0 1
    python benchmarks/bench_loop.py DATA --run RUN               # an existing run of DATA, no training

Trains the CPU default on DATA (unless ``--run``), then on a scratch copy of DATA (images linked, verified/ and
corrections/ empty):

* **Folder gain.** Rounds of ``--per-round`` images in review order (most unsure first), ``--rounds`` rounds.
  ``verify``: each image's ground truth becomes its verified mask. ``strokes``: 3 simulated strokes per image,
  each the interior of the largest wrong region of its current suggestion (the pixels at least half the
  region's depth inside it, within ``STROKE_REACH`` px of its deepest point), labelled with the true class,
  the image's suggestion refreshed between strokes. After each round: ``refresh_suggestions`` (refit, then
  every image). Reported: the suggestion mIoU and per-class IoU on the images never touched, and the seconds
  of the refit and of the refresh of every image.
* **Clicks per image (NoC).** From each image's suggestion, click at the point farthest inside the largest
  error region (a disk of ``CLICK_RADIUS`` px, the ground-truth class there), up to ``--max-clicks``; an
  image's IoU is the mean IoU over the labels of its ground truth and its suggestion. Reported: mean clicks
  to 85% and 90% (an image that never gets there counts ``--max-clicks``), per class (images tagged with
  it), the share that never gets there, and the seconds per click.
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from bench_real import scratch_copy, train
from oste_core.config import apply_overrides, default_config
from oste_core.data import LabelledFolder, load_mask, open_folder
from oste_core.engine.predictor import Predictor
from oste_core.engine.run_eval import RunEvaluation
from oste_core.labels import UNSURE
from oste_core.suggest.corrections import save_corrections
from oste_core.suggest.refresh import refresh_suggestions
from oste_core.utils.device import device_description, pick_device

STROKES_PER_IMAGE = 3
STROKE_REACH = 30  # px: a stroke covers the core of the wrong region near its deepest point
CLICK_RADIUS = 3  # px
THRESHOLDS = (0.85, 0.90)


def image_iou(prediction: np.ndarray, truth: np.ndarray) -> float:
    """Mean IoU over the labels present in ``truth`` or ``prediction`` (255 in ``truth`` ignored)."""
    valid = truth != UNSURE
    labels = np.union1d(np.unique(truth[valid]), np.unique(prediction[valid]))
    ious = []
    for label in labels:
        p, t = (prediction == label) & valid, (truth == label) & valid
        union = np.count_nonzero(p | t)
        ious.append(np.count_nonzero(p & t) / union if union else 1.0)
    return float(np.mean(ious)) if ious else 1.0


def largest_error(prediction: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, int] | None:
    """The largest connected region where ``prediction`` is wrong with one true label, and that label."""
    wrong = (prediction != truth) & (truth != UNSURE)
    best = None
    for label in np.unique(truth[wrong]):
        count, components, stats, _ = cv2.connectedComponentsWithStats((wrong & (truth == label)).astype(np.uint8), 8)
        if count > 1:
            index = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
            area = stats[index, cv2.CC_STAT_AREA]
            if best is None or area > best[0]:
                best = (area, components == index, int(label))
    return None if best is None else (best[1], best[2])


def deepest_point(region: np.ndarray) -> tuple[np.ndarray, int, int]:
    """Distance to the region's border of every pixel, and the (y, x) farthest inside."""
    depth = cv2.distanceTransform(np.pad(region, 1).astype(np.uint8), cv2.DIST_L2, 5)[1:-1, 1:-1]
    y, x = np.unravel_index(int(np.argmax(depth)), depth.shape)
    return depth, int(y), int(x)


def disk(shape: tuple[int, int], y: int, x: int, radius: float) -> np.ndarray:
    ys, xs = np.ogrid[: shape[0], : shape[1]]
    return (ys - y) ** 2 + (xs - x) ** 2 <= radius ** 2


def add_stroke(corrections: np.ndarray, prediction: np.ndarray, truth: np.ndarray, click: bool) -> bool:
    """Paint one simulated stroke (or click) into ``corrections``; False when nothing is wrong."""
    found = largest_error(prediction, truth)
    if found is None:
        return False
    region, label = found
    depth, y, x = deepest_point(region)
    if click:
        painted = disk(region.shape, y, x, CLICK_RADIUS) & region
    else:
        painted = region & (depth >= max(1.0, depth[y, x] / 2)) & disk(region.shape, y, x, STROKE_REACH)
    painted[y, x] = True
    corrections[painted] = label
    return True


def suggestion_at(prediction, shape: tuple[int, int]) -> np.ndarray:
    return cv2.resize(prediction.suggestion, (shape[1], shape[0]), interpolation=cv2.INTER_NEAREST)


def evaluate(predictor: Predictor, folder: LabelledFolder, predictions: dict, skip: set[str]) -> dict:
    evaluation = RunEvaluation(predictor.class_names)
    for sample in folder.samples:
        if sample.stem not in skip and sample.gt_mask is not None:
            evaluation.add(sample, predictions[sample.stem])
    return evaluation.report()


def run_predictor(run: Path, device: str, settings: list[str]) -> Predictor:
    """The run's predictor with ``settings`` (``KEY=VALUE``, e.g. a suggestion setting) applied."""
    predictor = Predictor.from_run(run, device=device)
    if settings:
        apply_overrides(predictor.cfg, settings)
        predictor.clear_cache()
    return predictor


def folder_gain(run: Path, data: Path, mode: str, per_round: int, rounds: int, device: str,
                settings: list[str]) -> list[dict]:
    """One row per round (round 0: before any correction); see the module docstring."""
    folder = open_folder(data)
    predictor = run_predictor(run, device, settings)
    predictions: dict = {}
    report = refresh_suggestions(predictor, folder, on_prediction=predictions.__setitem__)
    touched: set[str] = set()
    rows = []
    for round_index in range(rounds + 1):
        result = evaluate(predictor, folder, predictions, touched)
        rows.append({"round": round_index, "touched": len(touched), "refit_s": report.refit_s,
                     "refresh_s": report.refresh_s, "miou": result["suggestion_miou"],
                     "per_class": {k: v["suggestion"] for k, v in result["per_class"].items()}})
        print(f"  {mode} round {round_index}: {len(touched)} touched, suggestion {100 * result['suggestion_miou']:.1f} "
              f"(refit {report.refit_s:.1f} s, refresh {report.refresh_s:.0f} s)", flush=True)
        if round_index == rounds:
            break
        candidates = [s for s in folder.samples if s.stem not in touched and s.gt_mask is not None]
        chosen = sorted(candidates, key=lambda s: (-predictions[s.stem].uncertainty, s.stem))[:per_round]
        for sample in chosen:
            truth = load_mask(sample.gt_mask)
            if mode == "verify":
                target = folder.verified_path(sample)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(sample.gt_mask, target)
                sample.verified_mask = target
            else:
                corrections = np.full(truth.shape, UNSURE, np.uint8)
                prediction = predictions[sample.stem]
                for _ in range(STROKES_PER_IMAGE):
                    if not add_stroke(corrections, suggestion_at(prediction, truth.shape), truth, click=False):
                        break
                    save_corrections(folder.root, sample.stem, corrections)
                    prediction = predictor.predict_sample(folder, sample)
            touched.add(sample.stem)
        report = refresh_suggestions(predictor, folder, changed=[s.stem for s in chosen],
                                     on_prediction=predictions.__setitem__)
    return rows


def clicks_per_image(run: Path, data: Path, max_clicks: int, limit: int | None, device: str,
                     settings: list[str]) -> dict:
    """NoC at each threshold, per class, the share never reaching it and the seconds per click."""
    folder = open_folder(data)
    predictor = run_predictor(run, device, settings)
    samples = [s for s in folder.samples if s.gt_mask is not None]
    if limit is not None and limit < len(samples):  # evenly spread over the folder (its sources, its classes)
        samples = [samples[round(i * len(samples) / limit)] for i in range(limit)]
    needed = {t: [] for t in THRESHOLDS}
    per_class = {t: {} for t in THRESHOLDS}
    seconds = []
    for sample in samples:
        truth = load_mask(sample.gt_mask)
        prediction = predictor.predict_sample(folder, sample)
        corrections = np.full(truth.shape, UNSURE, np.uint8)
        reached = {}
        for clicks in range(max_clicks + 1):
            current = suggestion_at(prediction, truth.shape)
            iou = image_iou(current, truth)
            for threshold in THRESHOLDS:
                if iou >= threshold and threshold not in reached:
                    reached[threshold] = clicks
            if len(reached) == len(THRESHOLDS) or clicks == max_clicks:
                break
            if not add_stroke(corrections, current, truth, click=True):
                break
            start = time.perf_counter()
            prediction = predictor.predict(None, folder.tag_indices(sample), image_path=sample.image_path,
                                           corrections=corrections)
            seconds.append(time.perf_counter() - start)
        for threshold in THRESHOLDS:
            count = reached.get(threshold, max_clicks)
            needed[threshold].append((count, threshold in reached))
            for tag in sample.tags:
                per_class[threshold].setdefault(tag, []).append(count)
    return {"images": len(samples), "seconds_per_click": statistics.median(seconds) if seconds else 0.0,
            "max_click_s": max(seconds, default=0.0),
            "noc": {t: statistics.mean(c for c, _ in needed[t]) for t in THRESHOLDS},
            "never": {t: sum(not ok for _, ok in needed[t]) / len(needed[t]) for t in THRESHOLDS},
            "per_class": {t: {k: statistics.mean(v) for k, v in per_class[t].items()} for t in THRESHOLDS}}


def print_tables(data: Path, seed: int, gains: dict[str, list[dict]], clicks: dict, device: torch.device) -> None:
    print(f"\n### {data.name}/, seed {seed} ({device_description(device)}, torch {torch.__version__})\n")
    for mode, rows in gains.items():
        classes = list(rows[0]["per_class"])
        print(f"Folder gain, {mode}: suggestion mIoU on the images never touched\n")
        print("| round | touched | mIoU | " + " | ".join(classes) + " | refit s | refresh s |")
        print("| --- " * (5 + len(classes)) + "|")
        for row in rows:
            print(f"| {row['round']} | {row['touched']} | {100 * row['miou']:.1f} | "
                  + " | ".join(f"{100 * row['per_class'].get(c, 0.0):.1f}" for c in classes)
                  + f" | {row['refit_s']:.1f} | {row['refresh_s']:.0f} |")
        print()
    if clicks:
        classes = sorted(next(iter(clicks["per_class"].values())))
        print(f"Clicks per image ({clicks['images']} images, median {clicks['seconds_per_click']:.2f} s per click, "
              f"max {clicks['max_click_s']:.2f} s)\n")
        print("| IoU | NoC | never | " + " | ".join(classes) + " |")
        print("| --- " * (3 + len(classes)) + "|")
        for threshold in THRESHOLDS:
            print(f"| {int(threshold * 100)}% | {clicks['noc'][threshold]:.2f} | {100 * clicks['never'][threshold]:.0f}% | "
                  + " | ".join(f"{clicks['per_class'][threshold][c]:.2f}" for c in classes) + " |")
        print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", type=Path, help="labelled folder with ground-truth masks")
    parser.add_argument("--run", type=Path, help="a trained run of DATA (default: train the CPU default per seed)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--modes", default="verify,strokes")
    parser.add_argument("--per-round", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--max-clicks", type=int, default=20)
    parser.add_argument("--click-images", type=int, help="clicks on N images evenly spread over the folder "
                                                         "(default: all)")
    parser.add_argument("--no-clicks", action="store_true")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override (training)")
    parser.add_argument("--predict-set", action="append", default=[], metavar="KEY=VALUE",
                        help="config override of the run's predictor (e.g. model.pixel_probe_weight=0.3)")
    parser.add_argument("--keep", type=Path, help="keep the runs and scratch folders here")
    args = parser.parse_args()
    device = pick_device(args.device)
    root = args.keep or Path(tempfile.mkdtemp(prefix="bench_loop_"))
    overrides = dict(item.split("=", 1) for item in args.set)
    try:
        for seed in ([None] if args.run else args.seeds):
            run = args.run
            if run is None:
                run = root / f"run_seed{seed}"
                shutil.rmtree(run, ignore_errors=True)
                seconds = train(args.data, run, {**overrides, "train.seed": seed}, device)
                print(f"seed {seed}: trained in {seconds:.0f} s", flush=True)
            gains = {mode: folder_gain(run, scratch_copy(args.data, root / f"data_{mode}"), mode, args.per_round,
                                       args.rounds, str(device), args.predict_set)
                     for mode in args.modes.split(",")}
            clicks = {} if args.no_clicks else clicks_per_image(run, args.data, args.max_clicks, args.click_images,
                                                                str(device), args.predict_set)
            print_tables(args.data, default_config(device.type).train.seed if seed is None else seed, gains, clicks,
                         device)
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
