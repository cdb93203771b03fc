"""The paper's ablation (Table 3) on the synthetic benchmark: baseline, +LEM, +MAF, +FBE, all.

Each variant trains from the same seed with the same budget on the same demo folder, then is
evaluated on a held-out demo folder (different seed): mIoU (best background threshold) of the CAM, the
LEM merged CAM and the enhanced CAM that FBE uses (MAF's; with LEM alone (CAM + merged) / 2), pseudo-label
mIoU and coverage, segmentation mIoU, wall time. Prints a markdown table.

    python benchmarks/bench_quality.py --iters 300 --n 200 --size 96 --crop 96 --batch 8
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from oste_core.config import ABLATION_VARIANTS, OSTEConfig, apply_overrides
from oste_core.data import open_folder, write_demo_data
from oste_core.engine.predictor import Predictor
from oste_core.engine.run_eval import evaluate_run
from oste_core.engine.trainer import Trainer
from oste_core.utils.device import device_description, pick_device

VARIANTS = ABLATION_VARIANTS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iters", type=int, default=300)
    parser.add_argument("--n", type=int, default=200, help="training images")
    parser.add_argument("--n-val", type=int, default=60, help="held-out images")
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--crop", type=int, default=96)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated subset")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp())
    train_dir = write_demo_data(root / "train", n=args.n, size=args.size, seed=args.seed)
    val_dir = write_demo_data(root / "val", n=args.n_val, size=args.size, seed=args.seed + 1000)
    val = open_folder(val_dir)
    device = pick_device(args.device)

    rows = []
    for name in args.variants.split(","):
        cfg = OSTEConfig()
        apply_overrides(cfg, {"train.iters": args.iters, "train.batch": args.batch, "train.crop": args.crop,
                              "train.seed": args.seed, "train.device": str(device), "train.workers": 2,
                              "train.checkpoint_every": 0, "train.log_every": 50, **VARIANTS[name]})
        apply_overrides(cfg, args.set)
        start = time.perf_counter()
        run = Trainer(cfg, train_dir, root / "runs" / name.replace(" ", "_")).run()
        train_s = time.perf_counter() - start
        report = evaluate_run(Predictor.from_run(run, device=str(device)), val)
        rows.append((name, report, train_s, time.perf_counter() - start - train_s))
        print(f"{name}: {report['cam_miou']:.3f} CAM, {report['pseudo_miou']:.3f} pseudo, "
              f"{report['seg_miou']:.3f} seg, {train_s:.0f} s", flush=True)

    print(f"\nbench_quality: synthetic demo ({args.n} train / {args.n_val} held-out images, {args.size} px), "
          f"{args.iters} iters x batch {args.batch}, crop {args.crop}, seed {args.seed}, "
          f"{device_description(device)}, torch {torch.__version__}\n")
    print("| variant | CAM mIoU | merged CAM | enhanced CAM | pseudo mIoU | pseudo coverage | seg mIoU "
          "| train s | eval s |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, r, train_s, eval_s in rows:
        lem, maf = VARIANTS.get(name, {}).get("model.use_lem", True), VARIANTS.get(name, {}).get("model.use_maf", True)
        merged = f"{100 * r['merged_cam_miou']:.1f}" if lem else "-"
        enhanced = f"{100 * r['enhanced_cam_miou']:.1f}" if lem or maf else "-"
        print(f"| {name} | {100 * r['cam_miou']:.1f} | {merged} | {enhanced} | {100 * r['pseudo_miou']:.1f} | "
              f"{100 * r['pseudo_coverage']:.1f}% | {100 * r['seg_miou']:.1f} | {train_s:.0f} | {eval_s:.0f} |")


if __name__ == "__main__":
    main()
