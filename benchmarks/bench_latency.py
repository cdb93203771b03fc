"""Seconds to a suggestion and a CAM overlay for a new photo, once the model is loaded (the GUI's case).

Each photo is resized to ``--side`` (longest side) and predicted as a photo the run has never seen (no
cached features): backbone features, CAMs, FBE pseudo-label, suggestion, then the JET overlay of the
first tag's enhanced CAM blended over the photo (what the GUI draws). Prints the time of each photo and
the median.

    python benchmarks/bench_latency.py RUN ../shared/data/real-dev/pets --n 10 --side 500
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import cv2
import torch

from oste_core.data import load_image, open_folder
from oste_core.engine.predictor import Predictor
from oste_core.export import save_heatmap_png
from oste_core.utils.device import device_description


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path)
    parser.add_argument("data", type=Path, help="a labelled folder to take photos and their tags from")
    parser.add_argument("--n", type=int, default=10)
    parser.add_argument("--side", type=int, default=500, help="longest side of each photo (resized)")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    predictor = Predictor.from_run(args.run, device=args.device)
    folder = open_folder(args.data)
    out = Path(tempfile.mkdtemp(prefix="bench_latency_"))
    times = []
    for sample in folder.samples[: args.n]:
        image = load_image(sample.image_path, max_side=None)
        scale = args.side / max(image.shape[:2])
        image = cv2.resize(image, (round(image.shape[1] * scale), round(image.shape[0] * scale)),
                           interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
        tags = folder.tag_indices(sample)
        start = time.perf_counter()
        prediction = predictor.predict(image, tags)  # no key, no path: nothing cached
        save_heatmap_png(out / f"{sample.stem}.png", prediction.enhanced_cam[tags[0] - 1], image)
        times.append(time.perf_counter() - start)
        print(f"{sample.rel}: {image.shape[1]}x{image.shape[0]}, {times[-1]:.2f} s", flush=True)
    print(f"\nbench_latency: {len(times)} photos at longest side {args.side}, {device_description(predictor.device)}, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads: median {statistics.median(times):.2f} s, "
          f"max {max(times):.2f} s (first photo included)")


if __name__ == "__main__":
    main()
