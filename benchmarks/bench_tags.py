"""Suggested tags and priors by name on a real labelled folder: hide tags, train, score the suggestions.

For each seed: a scratch copy of DATA (symbolic links to the images) whose ``tags.csv`` lists only a random
``--hide`` share of the images less (the others become "not tagged yet"), a training on the rest (the
device's default config, ``--set`` on top), then the suggested tags of the untagged images against their
hidden tags: precision and recall at several thresholds, per class, and the per-image probabilities as
JSON. ``--rename old=new,...`` renames classes in the copy's ``classes.txt`` and ``tags.csv`` (the masks
keep their indices); with ``--miou`` the run's suggestion mIoU on every image with a mask is reported too.

    python benchmarks/bench_tags.py ../shared/data/real-dev/mix --seeds 0 1
    python benchmarks/bench_tags.py ../shared/data/real-dev/mix --hide 0 --rename cat=kitty,dog=puppy,car=automobile --miou
"""
from __future__ import annotations

import argparse
import csv
import json
import random
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_real import evaluate, train  # noqa: E402

from oste_core.data import open_folder  # noqa: E402
from oste_core.engine.run_folder import FINAL_MODEL  # noqa: E402
from oste_core.utils.device import pick_device  # noqa: E402

THRESHOLDS = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def scratch_copy(data: Path, into: Path, hide: float, seed: int, rename: dict[str, str],
                 subset: int | None = None) -> dict[str, list[str]]:
    """The copy (images and masks as links; ``subset``: that many random images only); returns the hidden
    images' true tags (rel -> tags)."""
    with open(data / "tags.csv", newline="") as handle:
        rows = [(row["image"], [rename.get(t, t) for t in row["tags"].split(";") if t]) for row in csv.DictReader(handle)]
    if subset is not None:
        rows = sorted(random.Random(1000 + seed).sample(rows, subset))
    kept = {Path(rel).stem for rel, _ in rows}
    shutil.rmtree(into, ignore_errors=True)
    for path in data.rglob("*"):
        target = into / path.relative_to(data)
        if path.is_dir():
            target.mkdir(parents=True, exist_ok=True)
        elif path.name not in ("tags.csv", "classes.txt") and path.parent.name != "verified" and path.stem in kept:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(path.resolve())
    names = [rename.get(line.strip(), line.strip()) for line in (data / "classes.txt").read_text().splitlines() if line.strip()]
    (into / "classes.txt").write_text("\n".join(names) + "\n")
    hidden = set(random.Random(seed).sample(range(len(rows)), round(hide * len(rows))))
    with open(into / "tags.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image", "tags"])
        writer.writerows([rel, ";".join(tags)] for index, (rel, tags) in enumerate(rows) if index not in hidden)
    return {rows[index][0]: rows[index][1] for index in sorted(hidden)}


def score(run: Path, data: Path, truth: dict[str, list[str]], device: str) -> dict:
    """Precision and recall of the suggested tags of the untagged images, per threshold and class."""
    from oste_core.engine.tag_suggestions import DEFAULT_THRESHOLD, TagSuggester

    suggester = TagSuggester.from_run(run, device=device)
    folder = open_folder(data)
    start = time.perf_counter()
    suggestions = suggester.suggest_folder(folder)
    seconds = time.perf_counter() - start
    per_image = {rel: {s.name: [round(s.probability, 4), round(s.classifier, 4),
                                None if s.imagenet is None else round(s.imagenet, 4)] for s in found}
                 for rel, found in suggestions.items()}
    report = {"images": len(suggestions), "seconds": round(seconds, 1), "default_threshold": DEFAULT_THRESHOLD,
              "thresholds": {}, "per_class": {}, "per_image": per_image, "truth": truth}
    classes = sorted({name for tags in truth.values() for name in tags})
    for threshold in THRESHOLDS:
        report["thresholds"][threshold] = precision_recall(per_image, truth, threshold, 0)
    for name in classes:
        report["per_class"][name] = precision_recall(per_image, truth, DEFAULT_THRESHOLD, 0, only=name)
    for column, label in ((1, "classifier alone"), (2, "ImageNet alone")):
        report[label] = precision_recall(per_image, truth, DEFAULT_THRESHOLD, column)
    return report


def precision_recall(per_image: dict, truth: dict, threshold: float, column: int, only: str | None = None) -> dict:
    """Micro precision / recall of "probability >= threshold" against the true tags."""
    hits = suggested = actual = 0
    for rel, tags in truth.items():
        for name, values in per_image.get(rel, {}).items():
            if only is not None and name != only:
                continue
            value = values[column]
            said = value is not None and value >= threshold
            real = name in tags
            hits += said and real
            suggested += said
            actual += real
    return {"precision": round(hits / suggested, 4) if suggested else None,
            "recall": round(hits / actual, 4) if actual else None, "suggested": suggested, "actual": actual}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", type=Path)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--hide", type=float, default=0.5, help="share of the images whose tags are hidden")
    parser.add_argument("--rename", default="", help="old=new,... class renames in the copy")
    parser.add_argument("--miou", action="store_true", help="also the suggestion mIoU (bench_real.evaluate)")
    parser.add_argument("--subset", type=int, help="use only this many random images of DATA")
    parser.add_argument("--work", type=Path, default=Path("/tmp/oste-bench-tags"))
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--train-only", action="store_true", help="train, do not score")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    rename = dict(pair.split("=", 1) for pair in args.rename.split(",") if pair)
    overrides = dict(item.split("=", 1) for item in args.set)
    device = pick_device(args.device)
    tag = f"{args.data.name}{args.subset or ''}_hide{args.hide}" + ("_" + "_".join(rename.values()).replace(" ", "") if rename else "")
    for seed in args.seeds:
        root = args.work / f"{tag}_s{seed}"
        data, run = root / "data", root / "run"
        truth_file = root / "truth.json"
        if not (run / FINAL_MODEL).is_file():
            root.mkdir(parents=True, exist_ok=True)
            truth = scratch_copy(args.data, data, args.hide, seed, rename, args.subset)
            truth_file.write_text(json.dumps(truth))
            shutil.rmtree(run, ignore_errors=True)
            seconds = train(data, run, {"train.seed": seed, **overrides}, device)
            print(f"seed {seed}: trained in {seconds:.0f} s", flush=True)
        if args.train_only:
            continue
        truth = json.loads(truth_file.read_text())
        report = score(run, data, truth, str(device)) if truth else {}
        if args.miou:
            report["suggestion_miou"] = evaluate(run, data, str(device))["suggestion_miou"]
        (root / "report.json").write_text(json.dumps(report, indent=1))
        brief = {key: value for key, value in report.items() if key not in ("per_image", "truth")}
        print(f"seed {seed}: {json.dumps(brief)}", flush=True)


if __name__ == "__main__":
    main()
