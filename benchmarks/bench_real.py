"""Mask quality on a real labelled folder: train, predict every image with a ground-truth mask, print one table.

Trains on DATA (native layout with ``masks/``; the fast mode unless ``--mode`` or ``--set``), then
evaluates on all of DATA's images that have a ground-truth mask (an annotation assistant labels the images
it trained on). Columns: CAM, merged CAM and enhanced CAM mIoU (best background threshold), pseudo-label
mIoU (on the labelled pixels) and coverage, segmentation and suggestion mIoU (every pixel), the
suggestion's per-class IoU, and the train and predict seconds.

    python benchmarks/bench_real.py ../shared/data/real-dev/mix --seeds 0 1
    python benchmarks/bench_real.py ../shared/data/real-dev/mix --ablation
    python benchmarks/bench_real.py ../shared/data/real-dev/mix --loop          # simulated annotator
    python benchmarks/bench_real.py DATA --mode full                            # full fine-tuning

``--loop`` simulates an annotator after the first training: each round takes the N worst images in
review order (most unsure pseudo-label pixels first), copies their ground truth into ``verified/`` of a
scratch copy of the folder (symbolic links to the images), runs the incremental update
(``Trainer.run_update``) and reports the suggestion mIoU on the other images (never verified).
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from oste_core.config import ABLATION_VARIANTS, TRAINING_MODES, OSTEConfig, apply_overrides, default_config
from oste_core.data import open_folder
from oste_core.engine.predictor import Predictor
from oste_core.engine.run_eval import RunEvaluation
from oste_core.engine.trainer import Trainer
from oste_core.utils.device import device_description, pick_device

VARIANTS = {**ABLATION_VARIANTS, "default": {}}  # "default": the device's default config as it is (a CPU: the preset)
METRICS = ("cam_miou", "merged_cam_miou", "enhanced_cam_miou", "pseudo_miou", "pseudo_coverage", "seg_miou",
           "suggestion_miou")


def evaluate(run: Path, data: Path, device: str, exclude: set[str] = frozenset()) -> dict:
    """Metrics of a run on the images of ``data`` with a ground-truth mask, leaving out ``exclude`` stems."""
    predictor = Predictor.from_run(run, device=device)
    folder = open_folder(data)
    evaluation = RunEvaluation(predictor.class_names)
    for sample in folder.samples:
        if sample.gt_mask is not None and sample.stem not in exclude:
            evaluation.add(sample, predictor.predict_sample(folder, sample))
    return evaluation.report(predictor.problems)


def train(data: Path, run: Path, overrides: dict, device: torch.device, mode: str = "fast") -> float:
    cfg = default_config(device.type, mode)
    apply_overrides(cfg, {"train.device": str(device), "train.checkpoint_every": 0, **overrides})
    start = time.perf_counter()
    Trainer(cfg, data, run).run()
    return time.perf_counter() - start


def scratch_copy(data: Path, into: Path) -> Path:
    """A copy of a labelled folder whose images are symbolic links (verified/ starts empty)."""
    shutil.rmtree(into, ignore_errors=True)
    for path in data.rglob("*"):
        target = into / path.relative_to(data)
        if path.is_dir():
            target.mkdir(parents=True, exist_ok=True)
        elif path.parent.name != "verified":
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(path.resolve())
    return into


def annotator_loop(data: Path, run: Path, device: str, per_round: int, rounds: int, budget_s: float) -> list[dict]:
    """Simulated corrections: see the module docstring. One row per round (round 0 = before any)."""
    verified: set[str] = set()
    rows = []
    for round_index in range(rounds + 1):
        folder = open_folder(data)
        predictor = Predictor.from_run(run, device=device)
        evaluation = RunEvaluation(predictor.class_names)
        unsure: list[tuple[float, str]] = []
        for sample in folder.samples:
            prediction = predictor.predict_sample(folder, sample)
            if sample.stem not in verified:
                unsure.append((prediction.uncertainty, sample.stem))
                evaluation.add(sample, prediction)
        report = evaluation.report()
        rows.append({"round": round_index, "verified": len(verified), "update_s": rows[-1]["next_update_s"] if rows
                     else 0.0, "suggestion_miou": report["suggestion_miou"],
                     "per_class": {k: v["suggestion"] for k, v in report["per_class"].items()}})
        if round_index == rounds:
            break
        for _, stem in sorted(unsure, reverse=True)[:per_round]:  # review order: most unsure first
            sample = folder.find(stem)
            target = folder.verified_path(sample)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(sample.gt_mask, target)
            verified.add(stem)
        cfg = default_config("cpu")
        cfg.train.device = device
        start = time.perf_counter()
        Trainer(cfg, data, run).run_update(budget_s)
        rows[-1]["next_update_s"] = time.perf_counter() - start
    return rows


def _measured(reports: list[dict], key: str) -> bool:
    """False for the merged CAM of runs without LEM (an all-zero map, nothing to measure)."""
    return key != "merged_cam_miou" or all(r["use_lem"] for r in reports)


def _pct(value: float) -> str:
    return f"{100 * value:.1f}"


def _mean_spread(values: list[float]) -> str:
    if len(values) == 1:
        return _pct(values[0])
    return f"{100 * statistics.mean(values):.1f} ± {100 * (max(values) - min(values)) / 2:.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", type=Path, help="labelled folder with ground-truth masks (masks/<file stem>.png)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--ablation", action="store_true", help="baseline / +LEM / +MAF / +FBE / all / default rows")
    parser.add_argument("--variants", help="comma-separated subset of the ablation rows, e.g. baseline,all")
    parser.add_argument("--loop", action="store_true", help="simulate an annotator (see the docstring)")
    parser.add_argument("--loop-n", type=int, default=5, help="images verified per round")
    parser.add_argument("--loop-rounds", type=int, default=3)
    parser.add_argument("--update-s", type=float, default=45.0, help="budget of each incremental update")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--mode", choices=TRAINING_MODES, default="fast",
                        help="the training mode (fast: the default; full: full fine-tuning; paper: the paper's settings)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    parser.add_argument("--json", type=Path, help="also write every result here")
    parser.add_argument("--markdown", type=Path, help="also write the table, its command and machine here, as "
                                                      "docs/BENCHMARKS.md shows them")
    parser.add_argument("--keep", type=Path, help="keep the run folders here (default: a temporary folder, deleted as it goes)")
    args = parser.parse_args()
    device = pick_device(args.device)
    root = args.keep or Path(tempfile.mkdtemp(prefix="bench_real_"))
    overrides = dict(item.split("=", 1) for item in args.set)
    variants = VARIANTS if args.ablation else {"default": {}}
    if args.variants:
        variants = {name: VARIANTS[name] for name in args.variants.split(",")}

    loop_run = root / f"{next(iter(variants)).replace('+', 'plus_')}_seed{args.seeds[0]}" if args.loop else None
    try:
        run_benchmark(args, root, variants, overrides, device, loop_run)
    finally:
        if not args.keep:  # the runs' feature caches take GBs on a large folder
            shutil.rmtree(root, ignore_errors=True)


def run_benchmark(args: argparse.Namespace, root: Path, variants: dict, overrides: dict, device: torch.device,
                  loop_run: Path | None) -> None:
    """Train and evaluate every variant and seed, print the table (and the annotator loop)."""
    results: dict[str, list[dict]] = {}
    for name, variant in variants.items():
        for seed in args.seeds:
            run = root / f"{name.replace('+', 'plus_')}_seed{seed}"
            shutil.rmtree(run, ignore_errors=True)
            train_s = train(args.data, run, {**variant, **overrides, "train.seed": seed}, device, args.mode)
            start = time.perf_counter()
            report = evaluate(run, args.data, str(device))
            report.update(seed=seed, train_s=train_s, predict_s=time.perf_counter() - start,
                          use_lem=OSTEConfig.load(run / "config.yaml").model.use_lem)
            results.setdefault(name, []).append(report)
            print(f"{name} seed {seed}: suggestion {_pct(report['suggestion_miou'])}, seg {_pct(report['seg_miou'])}, "
                  f"pseudo {_pct(report['pseudo_miou'])} ({_pct(report['pseudo_coverage'])}% labelled), "
                  f"train {train_s:.0f} s", flush=True)
            if not args.keep and run != loop_run:
                shutil.rmtree(run, ignore_errors=True)

    first = next(iter(results.values()))[0]
    classes = list(first["per_class"])
    lines = ["| variant | CAM | merged CAM | enhanced CAM | pseudo | coverage | seg | suggestion | "
             + " | ".join(classes) + " | train s | predict s |", "| --- " * (11 + len(classes)) + "|"]
    for name, reports in results.items():
        cells = [_mean_spread([r[key] for r in reports]) if _measured(reports, key) else "-" for key in METRICS]
        per_class = [_mean_spread([r["per_class"].get(c, {}).get("suggestion", 0.0) for r in reports]) for c in classes]
        seconds = [f"{statistics.mean(r[key] for r in reports):.0f}" for key in ("train_s", "predict_s")]
        lines.append(f"| {name} | " + " | ".join(cells + per_class + seconds) + " |")
    machine = (f"{args.data} ({first['images']} images evaluated), seeds {args.seeds}, {device_description(device)}, "
               f"torch {torch.__version__}, overrides {overrides or 'none'}")
    legend = ("mIoU in %, mean ± half the range over the seeds; per-class columns: suggestion IoU; "
              "pseudo: labelled pixels only, coverage: share labelled.")
    print(f"\nbench_real: {machine}\n")
    print("\n".join(lines))
    print(f"\n{legend}")
    if args.markdown:
        command = "python benchmarks/bench_real.py " + " ".join(sys.argv[1:])
        args.markdown.write_text(f"```\n{command}\n```\n\n{machine}.\n\n" + "\n".join(lines) + f"\n\n{legend}\n",
                                 encoding="utf-8")

    loop_rows = []
    if args.loop:
        data = scratch_copy(args.data, root / "loop_data")
        loop_rows = annotator_loop(data, loop_run, str(device), args.loop_n, args.loop_rounds, args.update_s)
        print(f"\nannotator loop: {args.loop_n} worst images verified per round, update budget {args.update_s:.0f} s; "
              "suggestion mIoU on the images never verified\n")
        print("| round | verified | update s | suggestion mIoU | " + " | ".join(loop_rows[0]["per_class"]) + " |")
        print("| --- " * (4 + len(loop_rows[0]["per_class"])) + "|")
        for row in loop_rows:
            print(f"| {row['round']} | {row['verified']} | {row['update_s']:.0f} | {_pct(row['suggestion_miou'])} | "
                  + " | ".join(_pct(v) for v in row["per_class"].values()) + " |")
    if args.json:
        args.json.write_text(json.dumps({"results": results, "loop": loop_rows}, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
