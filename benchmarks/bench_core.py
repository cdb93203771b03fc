"""Core costs of one OSTE training step, per backbone (prints Markdown tables; not a test).

* model: forward of the full ``OSTEModel`` (LEM, MAF on; 20 classes as VOC) + ``compute_losses`` + backward,
  ms per iteration at crop 321 (optimizer step and pseudo-labels not included; the pseudo-labels are a
  fixed tensor here, their cost is the CRF table), and peak memory: ``torch.cuda.max_memory_allocated``
  on CUDA (reset per row); on the CPU the process's peak RSS so far (``getrusage``), which only grows
  from row to row.
* energy loss (Eqs 18-21) forward + backward at the configured grid scale, per batch.
* dense CRF (Eq 11) per 321x321 image, 3 labels, 10 iterations, both backends.

bf16 autocast on CUDA as in training, float32 on the CPU. ResNets use random weights (``pretrained="none"``).
On the CPU only efficientnet_lite0 and resnet50 at batch 2 run unless ``--all``: with LEM's 2x2 + 4x4
tiles a CPU step takes minutes for the bigger rows (efficientnet_lite0, batch 2: ~1-2 min on 2 cores).

    python benchmarks/bench_core.py                       # CPU: efficientnet_lite0 + resnet50 at batch 2
    python benchmarks/bench_core.py --device cuda --iters 10
"""
from __future__ import annotations

import argparse
import resource
import time
from typing import Callable

import torch

from oste_core.config import OSTEConfig
from oste_core.losses import compute_losses
from oste_core.losses.energy import energy_loss
from oste_core.models import OSTEModel, build_backbone
from oste_core.models.modules.crf import make_crf, pydensecrf_available
from oste_core.utils.device import device_description, pick_device

NUM_CLASSES = 20
CPU_DEFAULT_ROWS = {("efficientnet_lite0", 2), ("resnet50", 2)}


def timed_ms(step: Callable[[], None], device: torch.device, warmup: int, iters: int) -> float:
    """Mean wall time of ``step`` in ms over ``iters`` runs after ``warmup`` untimed ones."""
    for _ in range(warmup):
        step()
    _sync(device)
    start = time.perf_counter()
    for _ in range(iters):
        step()
    _sync(device)
    return 1000.0 * (time.perf_counter() - start) / iters


def training_batch(batch: int, crop: int, device: torch.device) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    tags = torch.zeros(batch, NUM_CLASSES)
    tags[:, :2] = 1.0
    data = {
        "image": torch.randn(batch, 3, crop, crop, generator=gen),
        "image_uint8": torch.randint(0, 256, (batch, 3, crop, crop), generator=gen, dtype=torch.uint8),
        "tags": tags,
        "valid": torch.ones(batch, crop, crop, dtype=torch.bool),
        "pseudo": torch.randint(0, 3, (batch, crop, crop), generator=gen).masked_fill(
            torch.rand(batch, crop, crop, generator=gen) < 0.3, 255),
    }
    return {key: value.to(device) for key, value in data.items()}


def model_row(backbone_name: str, batch: int, crop: int, device: torch.device, warmup: int, iters: int) -> tuple[float, float]:
    """(ms per forward + losses + backward, peak memory in MiB) of the full OSTE model."""
    cfg = OSTEConfig()
    pretrained = "auto" if backbone_name == "efficientnet_lite0" else "none"
    backbone = build_backbone(backbone_name, cfg.model.output_stride, pretrained, cfg.model.frozen_bn)
    model = OSTEModel(cfg.model, NUM_CLASSES, backbone=backbone).to(device).train()
    data = training_batch(batch, crop, device)
    amp = torch.bfloat16 if device.type == "cuda" else None
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)

    def step() -> None:
        model.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
            out = model(data["image"])
            losses = compute_losses(out, data, data["pseudo"], cfg.loss, iteration=cfg.loss.seg_warmup_iters)
        losses["total"].backward()

    ms = timed_ms(step, device, warmup, iters)
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else _process_peak_rss()
    del model, data
    return ms, peak / 2 ** 20


def energy_row(batch: int, crop: int, device: torch.device, warmup: int, iters: int) -> float:
    """ms of the energy loss forward + backward for a batch of seg probabilities at stride 8."""
    loss_cfg = OSTEConfig().loss
    data = training_batch(batch, crop, device)
    side = (crop + 7) // 8
    logits = torch.randn(batch, NUM_CLASSES + 1, side, side, device=device, requires_grad=True)

    def step() -> None:
        energy_loss(torch.softmax(logits, dim=1), data["image_uint8"], data["valid"], loss_cfg.sigma_rgb,
                    loss_cfg.sigma_xy, loss_cfg.energy_scale, loss_cfg.energy_chunk).backward()

    return timed_ms(step, device, warmup, iters)


def crf_row(backend: str, crop: int, device: torch.device, warmup: int, iters: int) -> float:
    """ms per image of the dense CRF (10 iterations, 3 labels) on a smooth synthetic scene."""
    gen = torch.Generator().manual_seed(1)
    image = torch.nn.functional.interpolate(torch.rand(1, 3, 12, 12, generator=gen) * 255, size=(crop, crop),
                                            mode="bilinear", align_corners=False).to(torch.uint8)
    probs = torch.softmax(torch.nn.functional.interpolate(torch.randn(1, 3, 8, 8, generator=gen) * 3,
                                                          size=(crop, crop), mode="bilinear"), dim=1)
    crf = make_crf(backend, iters=10, device=device if backend == "torch" else None)
    image, probs = image.to(device), probs.to(device)
    return timed_ms(lambda: crf(image, probs), device, warmup, iters)


def _process_peak_rss() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024.0  # Linux reports KiB


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--iters", type=int, default=2, help="timed iterations per row")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--backbones", default="efficientnet_lite0,resnet50,resnet101,resnet38")
    parser.add_argument("--batches", default="2,8")
    parser.add_argument("--crop", type=int, default=321)
    parser.add_argument("--all", action="store_true", help="on the CPU, run every backbone x batch row")
    args = parser.parse_args()
    device = pick_device(args.device)
    backbones = [name.strip() for name in args.backbones.split(",") if name.strip()]
    batches = [int(b) for b in args.batches.split(",")]
    memory = "peak CUDA MiB" if device.type == "cuda" else "process peak RSS MiB"
    print(f"bench_core: {device_description(device)}, torch {torch.__version__}, crop {args.crop}, "
          f"{args.warmup} warm-up + {args.iters} timed iterations")
    print(f"\n| backbone | batch | fwd+loss+bwd ms/iter | {memory} |\n|---|---:|---:|---:|")
    for name in backbones:
        for batch in batches:
            if device.type == "cpu" and (name, batch) not in CPU_DEFAULT_ROWS and not args.all:
                print(f"| {name} | {batch} | skipped on CPU (--all) | |")
                continue
            ms, peak = model_row(name, batch, args.crop, device, args.warmup, args.iters)
            print(f"| {name} | {batch} | {ms:.0f} | {peak:.0f} |", flush=True)
    scale = OSTEConfig().loss.energy_scale
    print(f"\n| energy loss (scale {scale}, fwd+bwd) | batch | ms |\n|---|---:|---:|")
    for batch in batches:
        print(f"| {args.crop}px, {NUM_CLASSES + 1} classes | {batch} | "
              f"{energy_row(batch, args.crop, device, args.warmup, args.iters):.0f} |", flush=True)
    print(f"\n| dense CRF ({args.crop}x{args.crop}, 3 labels, 10 iters) | ms / image |\n|---|---:|")
    for backend in ("pydensecrf", "torch"):
        if backend == "pydensecrf" and not pydensecrf_available():
            print("| pydensecrf | not installed |")
            continue
        where = "CPU" if backend == "pydensecrf" else device.type
        print(f"| {backend} ({where}) | {crf_row(backend, args.crop, device, args.warmup, max(args.iters, 3)):.0f} |",
              flush=True)


if __name__ == "__main__":
    main()
