"""Training throughput and step-time breakdown (prints a table; not a test).

Runs the real `Trainer` (exactly what `oste train` and the GUI's worker run) on a synthetic folder
and reports images/s plus the mean time of each phase of a step: data, forward (backbone + LEM +
MAF + seg head), pseudo-labels (FBE + CRF), losses (incl. energy), backward + optimizer. The
forward is split further by timing the forward with LEM / MAF switched off, and the energy loss
is timed alone. ``--count-ops`` instead counts the aten ops (about one CUDA kernel launch each) and
host syncs of a step, which matter where the GPU step is bound by launches; it runs on any device.

    python benchmarks/bench_train.py --device cuda --backbone resnet50 --batch 8 --crop 321
    python benchmarks/bench_train.py --device cpu --iters 6 --batch 8 --crop 321
    python benchmarks/bench_train.py --device cpu --backbone resnet50 --pretrained none --crop 96 --batch 4 --count-ops
"""
from __future__ import annotations

import argparse
import tempfile
import traceback
from collections import Counter
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from oste_core.config import OSTEConfig, apply_overrides
from oste_core.data import write_demo_data
from oste_core.engine.trainer import Trainer
from oste_core.models import OSTEModel
from oste_core.utils.device import device_description, pick_device

from bench_core import energy_row, timed_ms  # the same timing helpers as the core benchmark


def bench_config(args, **overrides) -> OSTEConfig:
    cfg = OSTEConfig()
    apply_overrides(cfg, {"train.batch": args.batch, "train.crop": args.crop, "train.device": args.device,
                          "train.workers": args.workers, "train.checkpoint_every": 0,
                          "model.backbone": args.backbone, "model.pretrained": args.pretrained,
                          "model.crf_backend": args.crf, **overrides})
    apply_overrides(cfg, args.set)
    return cfg


def throughput(data: Path, args) -> float:
    """Images/s of plain training (no phase syncs): the second of two windows of ``args.iters`` steps."""
    cfg = bench_config(args, **{"train.iters": 2 * args.iters, "train.log_every": args.iters})
    rates = []
    Trainer(cfg, data, Path(tempfile.mkdtemp()),
            on_event=lambda event: rates.append(event.images_per_s) if event.kind == "progress" else None).run()
    return rates[-1]


def train_phases(data: Path, args) -> dict[str, float]:
    """Mean seconds per step of each training phase (CUDA synchronised between phases)."""
    cfg = bench_config(args, **{"train.iters": args.warmup + args.iters, "train.log_every": 1})
    trainer = Trainer(cfg, data, Path(tempfile.mkdtemp()), profile_phases=True)

    def drop_warmup(event) -> None:  # cudnn autotuning and allocator growth stay out of the means
        if event.kind == "progress" and event.iteration == args.warmup:
            trainer.timer.reset()

    trainer.on_event = drop_warmup
    trainer.run()
    return trainer.timer.means()


def profile_steps(data: Path, args, path: Path) -> None:
    """torch.profiler tables (top ops by device time, then by op and input shape) of 3 steps after warm-up."""
    from torch.profiler import ProfilerActivity, profile, schedule

    cfg = bench_config(args, **{"train.iters": args.warmup + 4, "train.log_every": 1})
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
    with profile(activities=activities, schedule=schedule(wait=args.warmup, warmup=1, active=3),
                 record_shapes=True) as prof:
        Trainer(cfg, data, Path(tempfile.mkdtemp()),
                on_event=lambda event: prof.step() if event.kind == "progress" else None).run()
    sort_by = "self_cuda_time_total" if torch.cuda.is_available() else "self_cpu_time_total"
    path.write_text(prof.key_averages().table(sort_by=sort_by, row_limit=50) + "\n\n" +
                    prof.key_averages(group_by_input_shape=True).table(sort_by=sort_by, row_limit=50))
    print(f"profile of 3 steps written to {path}")


SYNC_OPS = {"_local_scalar_dense", "nonzero", "_unique2", "unique_dim", "unique_consecutive", "masked_select"}
VIEW_OPS = {"view", "_unsafe_view", "as_strided", "alias", "t", "transpose", "permute", "expand", "slice", "select",
            "unsqueeze", "squeeze", "split", "split_with_sizes", "unbind", "detach", "empty", "empty_strided",
            "empty_like", "new_empty", "new_empty_strided", "lift_fresh", "_reshape_alias", "unfold"}


class OpCounter(TorchDispatchMode):
    """Counts aten ops that do work (views and allocations left out): on CUDA about one kernel launch each;
    and ops that make the host wait for the device (``.item()``, ``nonzero``, ``unique``, copies to the
    host), by call site. CPU tensors cannot show the copies; pass ``--crf torch`` on the CPU to count the CRF
    that CUDA runs (``auto`` picks pydensecrf there)."""

    def __init__(self) -> None:
        super().__init__()
        self.ops = 0
        self.syncs: Counter[str] = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.__name__.split(".")[0]
        if name in SYNC_OPS or _copies_to_host(name, args, kwargs or {}):
            stack = traceback.extract_stack()
            if any(frame.name == "_report_progress" for frame in stack):
                site = "progress logging (every train.log_every steps)"
            else:
                frames = [f for f in stack if "oste_core" in f.filename and "oste_core/data" not in f.filename]
                site = f"{Path(frames[-1].filename).name}:{frames[-1].lineno}" if frames else "outside oste_core"
            self.syncs[site] += 1
        self.ops += name not in VIEW_OPS
        return func(*args, **(kwargs or {}))


def _copies_to_host(name: str, args: tuple, kwargs: dict) -> bool:
    """A device-to-host copy (``.cpu()``, ``.tolist()``): the host waits for the device."""
    if name == "_to_copy":
        source, target = args[0], kwargs.get("device")
        return source.device.type != "cpu" and target is not None and torch.device(target).type == "cpu"
    if name == "copy_":
        return args[1].device.type != "cpu" and args[0].device.type == "cpu"
    return False


def count_ops(data: Path, args, steps: int = 2) -> OpCounter:
    """`OpCounter` over ``steps`` training steps after ``args.warmup`` (data loading in a worker process)."""
    cfg = bench_config(args, **{"train.iters": args.warmup + steps, "train.log_every": 1,
                                "train.workers": max(1, args.workers)})
    counter = OpCounter()

    def on_event(event) -> None:
        if event.kind == "progress" and event.iteration == args.warmup:
            counter.__enter__()
        elif event.kind == "progress" and event.iteration == args.warmup + steps:
            counter.__exit__(None, None, None)

    Trainer(cfg, data, Path(tempfile.mkdtemp()), on_event=on_event).run()
    return counter


def forward_ms(args, device: torch.device, **switches) -> float:
    """No-grad forward of the OSTE model with some modules switched off."""
    cfg = OSTEConfig()
    apply_overrides(cfg, {"model.backbone": args.backbone, "model.pretrained": args.pretrained, **switches})
    model = OSTEModel(cfg.model, num_classes=5).to(device).train()
    x = torch.randn(args.batch, 3, args.crop, args.crop, device=device)
    amp = torch.bfloat16 if device.type == "cuda" else None

    def step() -> None:
        with torch.autocast(device.type, dtype=amp, enabled=amp is not None), torch.no_grad():
            model(x)

    return timed_ms(step, device, args.warmup, args.iters)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument("--pretrained", default="auto", help="'none' for the ResNets when offline")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--crop", type=int, default=321)
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--crf", default="auto", help="CRF backend: auto, torch, pydensecrf")
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="config override for the training runs, e.g. train.compile=true")
    parser.add_argument("--profile", type=Path, help="also write a torch.profiler table of 3 steps to this file")
    parser.add_argument("--count-ops", action="store_true",
                        help="only count aten ops (~ CUDA kernel launches) and host syncs per training step")
    args = parser.parse_args()
    device = pick_device(args.device)
    args.device = str(device)
    data = write_demo_data(Path(tempfile.mkdtemp()) / "data", n=args.images, size=max(args.crop, 128), seed=0)
    if args.count_ops:
        steps = 2
        counter = count_ops(data, args, steps)
        print(f"\nbench_train --count-ops: {args.backbone}, batch {args.batch}, crop {args.crop}, {device}, "
              f"overrides {args.set or 'none'}: {counter.ops / steps:.0f} aten ops per step (views left out), "
              f"{sum(n for site, n in counter.syncs.items() if not site.startswith('progress')) / steps:.1f} "
              "host syncs per step besides logging; by call site:")
        for site, count in counter.syncs.most_common():
            print(f"  {count / steps:5.1f}  {site}")
        return

    images_per_s = throughput(data, args)
    phases = train_phases(data, args)
    step_ms = 1000 * sum(phases.values())
    full = forward_ms(args, device)
    no_lem = forward_ms(args, device, **{"model.use_lem": False})
    no_lem_maf = forward_ms(args, device, **{"model.use_lem": False, "model.use_maf": False})
    energy = energy_row(args.batch, args.crop, device, args.warmup, args.iters)

    print(f"\nbench_train: {args.backbone}, batch {args.batch}, crop {args.crop}, {device_description(device)}, "
          f"torch {torch.__version__}, CRF {args.crf}, overrides {args.set or 'none'}")
    print(f"full OSTE training: {images_per_s:.1f} images/s ({1000 * args.batch / images_per_s:.0f} ms/step)")
    print(f"phase breakdown (CUDA synchronised after each phase): {step_ms:.0f} ms/step\n")
    print(f"| {'phase':<38} | {'ms/step':>9} | {'share':>6} |")
    print(f"| {'-' * 38} | {'-' * 9}:| {'-' * 6}:|")
    for name, seconds in phases.items():
        print(f"| {name:<38} | {1000 * seconds:9.1f} | {100 * seconds * 1000 / step_ms:5.1f}% |")
    print("\nforward split (no-grad forward, same batch):")
    print(f"| {'part':<38} | {'ms':>9} |")
    print(f"| {'-' * 38} | {'-' * 9}:|")
    print(f"| {'backbone + CAM + seg head':<38} | {no_lem_maf:9.1f} |")
    print(f"| {'MAF (affinity + propagation)':<38} | {no_lem - no_lem_maf:9.1f} |")
    print(f"| {'LEM (2x2 + 4x4 tiles)':<38} | {full - no_lem:9.1f} |")
    print(f"| {'energy loss fwd+bwd (alone)':<38} | {energy:9.1f} |")
    pseudo_share = phases.get("pseudo_labels", 0.0) * 1000 / step_ms
    print(f"\npseudo-labels (FBE + CRF) share of step time: {100 * pseudo_share:.1f}%; with the energy loss "
          f"(timed alone): {100 * (pseudo_share + energy / step_ms):.1f}%")
    if args.profile:
        profile_steps(data, args, args.profile)


if __name__ == "__main__":
    main()
