"""One-step OSTE training: the engine behind `oste train` and the GUI's training worker.

Every iteration (as the paper does it): one forward pass gives the CAM, the LEM tile CAMs, the
MAF-enhanced CAM and the segmentation logits; pseudo-labels are made on the fly from the current
enhanced CAM by the FBE module (CRF included, outside autograd); user-verified masks replace them
where present; the total loss (Eq 22) updates the backbone through both branches.

A run folder holds ``config.yaml``, ``classes.txt``, ``versions.json``, ``problems.txt`` (images
that were skipped), ``metrics.jsonl``, ``checkpoint.pt`` (latest, for resume) and ``model.pt``.
"""
from __future__ import annotations

import json
import math
import platform
import random
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler

from oste_core import __version__
from oste_core.config import OSTEConfig
from oste_core.data import LabelledFolder, TrainDataset, open_folder, seed_worker, validate_images
from oste_core.engine import distributed as dist_utils
from oste_core.losses import compute_losses
from oste_core.models import OSTEModel
from oste_core.models.modules.crf import make_crf
from oste_core.models.modules.fbe import make_pseudo_labels
from oste_core.utils.device import device_description, pick_device
from oste_core.utils.io import atomic_path, atomic_write_text

CHECKPOINT = "checkpoint.pt"
FINAL_MODEL = "model.pt"


class TrainingError(RuntimeError):
    """Training cannot go on (diverged, no usable images, bad resume); the message says why."""


@dataclass
class TrainEvent:
    kind: str  # "start" | "progress" | "checkpoint" | "log" | "done" | "cancelled"
    iteration: int = 0
    total: int = 0
    losses: dict[str, float] = field(default_factory=dict)
    lr: float = 0.0
    images_per_s: float = 0.0
    eta_s: float = 0.0
    message: str = ""
    timings: dict[str, float] = field(default_factory=dict)  # mean seconds per step of each phase


def package_versions() -> dict[str, str]:
    """Versions written into each run folder (reproducibility)."""
    import cv2
    import torchvision

    versions = {
        "oste_studio": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "numpy": np.__version__,
        "opencv": cv2.__version__,
        "platform": platform.platform(),
    }
    try:
        from importlib.metadata import version

        versions["pydensecrf2"] = version("pydensecrf2")
    except Exception:  # noqa: BLE001 - optional backend
        versions["pydensecrf2"] = "not installed"
    return versions


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def save_checkpoint(path: Path, payload: dict) -> None:
    """torch.save through a temp file + rename, so a crash never leaves half a checkpoint."""
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


class PhaseTimer:
    """Mean wall time per training phase; synchronises CUDA so GPU work is attributed correctly."""

    def __init__(self, device: torch.device, enabled: bool = True) -> None:
        self.device, self.enabled = device, enabled
        self.totals: dict[str, float] = {}
        self.steps = 0
        self._last = 0.0

    def start(self) -> None:
        self._sync()
        self._last = time.perf_counter()

    def mark(self, phase: str) -> None:
        self._sync()
        now = time.perf_counter()
        self.totals[phase] = self.totals.get(phase, 0.0) + now - self._last
        self._last = now

    def reset(self) -> None:
        self.totals.clear()
        self.steps = 0

    def means(self) -> dict[str, float]:
        return {k: v / max(self.steps, 1) for k, v in self.totals.items()}

    def _sync(self) -> None:
        if self.enabled and self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


class Trainer:
    """Train OSTE on a labelled folder into a run folder. Thread-safe `cancel()`.

    ``cfg.train.batch`` is the global batch: under torchrun each process takes batch / N.
    ``profile_phases`` synchronises CUDA between phases so `timer` attributes GPU time exactly
    (benchmarks); without it CUDA timings only show launch time.
    """

    def __init__(
        self,
        cfg: OSTEConfig,
        data_dir: str | Path,
        run_dir: str | Path,
        on_event: Callable[[TrainEvent], None] | None = None,
        profile_phases: bool = False,
    ) -> None:
        self.cfg = cfg
        self.data_dir = Path(data_dir)
        self.run_dir = Path(run_dir)
        self.on_event = on_event
        self.profile_phases = profile_phases
        self._cancel = threading.Event()
        self.folder: LabelledFolder | None = None
        self.device: torch.device | None = None
        self.timer: PhaseTimer | None = None

    def cancel(self) -> None:
        """Ask the loop to stop after the current iteration; the last state is checkpointed."""
        self._cancel.set()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    # ----------------------------------------------------------------- setup
    def _emit(self, event: TrainEvent) -> None:
        if self.on_event is not None and self.dist.is_main:
            self.on_event(event)

    def _log(self, message: str) -> None:
        self._emit(TrainEvent("log", message=message))

    def _prepare_run_folder(self, folder: LabelledFolder, resume: bool) -> None:
        if not resume and any((self.run_dir / name).exists() for name in (CHECKPOINT, FINAL_MODEL)):
            raise TrainingError(f"{self.run_dir}: already holds a trained run; pass --resume to continue it "
                                "or choose a new run folder")
        self.run_dir.mkdir(parents=True, exist_ok=True)
        saved_cfg = self.run_dir / "config.yaml"
        if resume and saved_cfg.exists():
            saved = OSTEConfig.load(saved_cfg)
            saved.train.iters = self.cfg.train.iters  # resume may extend the schedule
            saved.train.device = self.cfg.train.device
            self.cfg = saved
        classes_file = self.run_dir / "classes.txt"
        if resume and classes_file.exists():
            saved_classes = classes_file.read_text(encoding="utf-8").splitlines()
            if saved_classes != folder.class_names:
                raise TrainingError(
                    f"{classes_file}: the run was trained on classes {saved_classes}, "
                    f"but {folder.root} now has {folder.class_names}; start a new run instead of --resume"
                )
        if not self.dist.is_main:
            return
        self.cfg.save(saved_cfg)
        atomic_write_text(classes_file, "\n".join(folder.class_names) + "\n")
        atomic_write_text(self.run_dir / "versions.json", json.dumps(package_versions(), indent=2))
        atomic_write_text(self.run_dir / "problems.txt", "".join(p + "\n" for p in folder.problems))
        atomic_write_text(
            self.run_dir / "data.json",
            json.dumps({"data_dir": str(self.data_dir.resolve()), "layout": folder.layout,
                        "images": len(folder.samples)}, indent=2),
        )

    def _loader(self, dataset: TrainDataset) -> Iterator[dict]:
        t = self.cfg.train
        generator = torch.Generator().manual_seed(t.seed)
        if self.dist.enabled:
            sampler = DistributedSampler(dataset, self.dist.world_size, self.dist.rank, shuffle=True, seed=t.seed)
        else:
            sampler = RandomSampler(dataset, generator=generator)
        per_process = max(1, t.batch // self.dist.world_size) if self.dist.enabled else t.batch
        drop_last = len(dataset) >= per_process * self.dist.world_size
        loader = DataLoader(
            dataset, batch_size=per_process, sampler=sampler, num_workers=t.workers, drop_last=drop_last,
            worker_init_fn=seed_worker, generator=generator, pin_memory=self.device.type == "cuda",
            persistent_workers=t.workers > 0,
        )
        epoch = 0
        while True:
            if isinstance(sampler, DistributedSampler):
                sampler.set_epoch(epoch)
            yield from loader
            epoch += 1

    # ------------------------------------------------------------------ run
    def run(self, resume: bool = False) -> Path:
        """Train to ``cfg.train.iters`` (or until cancelled); return the run folder."""
        requested = pick_device(self.cfg.train.device)
        self.dist = dist_utils.init_distributed(requested)
        self._crf = None
        try:
            return self._run(resume, dist_utils.local_device(requested, self.dist))
        finally:
            if self._crf is not None:
                self._crf.close()  # shuts down the pydensecrf process pool, if any
            dist_utils.cleanup(self.dist)

    def _run(self, resume: bool, device: torch.device) -> Path:
        self.device = device
        folder = open_folder(self.data_dir)
        bad = validate_images(folder)
        if bad:
            self._log(f"skipped {len(bad)} unreadable image(s): " + "; ".join(bad[:5]) + (" ..." if len(bad) > 5 else ""))
        if not folder.samples:
            raise TrainingError(f"{self.data_dir}: no readable images to train on")
        if not folder.class_names:
            raise TrainingError(f"{self.data_dir}: no classes (every image has empty tags)")
        self.folder = folder
        self._prepare_run_folder(folder, resume)
        cfg, t = self.cfg, self.cfg.train
        seed_everything(t.seed + self.dist.rank)

        model = OSTEModel(cfg.model, num_classes=len(folder.class_names)).to(device)
        use_cuda = device.type == "cuda"
        if use_cuda and t.channels_last:
            model = model.to(memory_format=torch.channels_last)
        optimizer = self._optimizer(model)
        start_iter = 0
        if resume:
            start_iter = self._load_checkpoint(model, optimizer)
        train_model = model
        if self.dist.enabled:
            train_model = torch.nn.parallel.DistributedDataParallel(
                model, device_ids=[device.index] if use_cuda else None
            )
        backbone = model.backbone
        dataset = TrainDataset(
            folder, crop=t.crop, scale_range=tuple(t.scale_range), hflip=t.hflip, max_side=t.max_side,
            mean=tuple(backbone.input_mean), std=tuple(backbone.input_std),
        )
        crf = self._crf = make_crf(cfg.model.crf_backend, iters=cfg.model.crf_iters, workers=t.crf_workers,
                                   device=device)
        amp_dtype = torch.bfloat16 if (use_cuda and t.amp and torch.cuda.is_bf16_supported()) else None
        self._emit(TrainEvent(
            "start", start_iter, t.iters,
            message=f"training {len(folder.samples)} images, {len(folder.class_names)} classes on "
                    f"{device_description(device)}; CRF backend {crf.backend}; "
                    f"backbone {cfg.model.backbone}; run folder {self.run_dir}",
        ))
        if start_iter >= t.iters:
            self._finish(model, start_iter)
            return self.run_dir

        batches = self._loader(dataset)
        timer = self.timer = PhaseTimer(device, enabled=self.profile_phases)
        window_start, window_iters = time.perf_counter(), 0
        train_model.train()
        iteration = start_iter
        try:
            while iteration < t.iters:
                if dist_utils.any_flag(self.cancelled, device, self.dist):
                    self._save_checkpoint(model, optimizer, iteration)
                    self._emit(TrainEvent("cancelled", iteration, t.iters,
                                          message=f"stopped at iteration {iteration}; checkpoint kept"))
                    return self.run_dir
                timer.start()
                batch = next(batches)
                batch = {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}
                images = batch["image"]
                if use_cuda and t.channels_last:
                    images = images.contiguous(memory_format=torch.channels_last)
                timer.mark("data")
                lr = self._set_lr(optimizer, iteration)
                with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                    out = train_model(images)
                timer.mark("forward")
                with torch.no_grad():
                    pseudo = make_pseudo_labels(
                        out["enhanced_cam"].detach().float(), batch["image_uint8"], batch["tags"],
                        cfg.model, crf, valid=batch["valid"],
                    )
                    verified = batch["has_mask"].view(-1, 1, 1)
                    pseudo = torch.where(verified, batch["mask"], pseudo)
                timer.mark("pseudo_labels")
                with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                    losses = compute_losses(out, batch, pseudo, cfg.loss, iteration)
                total = losses["total"]
                timer.mark("losses")
                optimizer.zero_grad(set_to_none=True)
                total.backward()
                # checked after the backward is queued (the GPU keeps busy meanwhile), before any weight changes
                if dist_utils.any_flag(not bool(torch.isfinite(total)), device, self.dist):
                    raise TrainingError(self._divergence_message(losses, iteration))
                if t.grad_clip > 0:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), t.grad_clip)
                optimizer.step()
                timer.mark("backward_step")
                timer.steps += 1
                iteration += 1
                window_iters += 1

                if iteration % t.log_every == 0 or iteration == t.iters or iteration == start_iter + 1:
                    images_per_s = window_iters * t.batch / max(time.perf_counter() - window_start, 1e-9)
                    window_start, window_iters = time.perf_counter(), 0
                    self._report_progress(iteration, losses, pseudo, lr, images_per_s)
                if t.checkpoint_every > 0 and iteration % t.checkpoint_every == 0 and iteration < t.iters:
                    self._save_checkpoint(model, optimizer, iteration)
                    self._emit(TrainEvent("checkpoint", iteration, t.iters, message=f"checkpoint at {iteration}"))
        except KeyboardInterrupt:
            self._save_checkpoint(model, optimizer, iteration)
            self._emit(TrainEvent("cancelled", iteration, t.iters, message=f"interrupted at {iteration}; checkpoint kept"))
            return self.run_dir
        self._save_checkpoint(model, optimizer, iteration)
        self._finish(model, iteration)
        return self.run_dir

    # --------------------------------------------------------------- helpers
    def _report_progress(
        self, iteration: int, losses: dict[str, torch.Tensor], pseudo: torch.Tensor, lr: float, images_per_s: float
    ) -> None:
        """A "progress" event and a metrics.jsonl line (the losses are averaged over DDP processes)."""
        t = self.cfg.train
        values = {k: float(dist_utils.all_reduce_mean(v.detach().float(), self.dist)) for k, v in losses.items()}
        eta = (t.iters - iteration) * t.batch / max(images_per_s, 1e-9)
        self._emit(TrainEvent("progress", iteration, t.iters, values, lr, images_per_s, eta, timings=self.timer.means()))
        if self.dist.is_main:
            with open(self.run_dir / "metrics.jsonl", "a", encoding="utf-8") as log:
                log.write(json.dumps({"iteration": iteration, "lr": lr, "images_per_s": images_per_s,
                                      "pseudo_unsure": float((pseudo == 255).float().mean()), **values}) + "\n")

    def _optimizer(self, model: OSTEModel) -> torch.optim.Optimizer:
        t = self.cfg.train
        groups = model.param_groups(t.lr, t.head_lr_mult)
        for group in groups:
            group["initial_lr"] = group["lr"]
        if t.optimizer == "sgd":
            return torch.optim.SGD(groups, lr=t.lr, momentum=t.momentum, weight_decay=t.weight_decay)
        if t.optimizer == "adamw":
            return torch.optim.AdamW(groups, lr=t.lr, weight_decay=t.weight_decay)
        raise TrainingError(f"unknown optimizer {t.optimizer!r} (use sgd or adamw)")

    def _set_lr(self, optimizer: torch.optim.Optimizer, iteration: int) -> float:
        t = self.cfg.train
        factor = (1.0 - iteration / max(t.iters, 1)) ** t.poly_power
        for group in optimizer.param_groups:
            group["lr"] = group["initial_lr"] * factor
        return optimizer.param_groups[0]["lr"]

    @staticmethod
    def _divergence_message(losses: dict[str, torch.Tensor], iteration: int) -> str:
        bad = [k for k, v in losses.items() if k != "total" and not math.isfinite(float(v.detach()))]
        return (f"training diverged at iteration {iteration}: loss {', '.join(bad) or 'total'} is not finite; "
                "the last checkpoint is kept — lower train.lr or check the input images")

    def _save_checkpoint(self, model: OSTEModel, optimizer: torch.optim.Optimizer, iteration: int) -> None:
        if not self.dist.is_main:
            return
        save_checkpoint(self.run_dir / CHECKPOINT, {
            "model": model.state_dict(), "optimizer": optimizer.state_dict(), "iteration": iteration,
            "config": self.cfg.to_dict(), "class_names": self.folder.class_names,
            "torch_rng": torch.get_rng_state(),
        })

    def _load_checkpoint(self, model: OSTEModel, optimizer: torch.optim.Optimizer) -> int:
        path = self.run_dir / CHECKPOINT
        if not path.exists():
            raise TrainingError(f"{path}: no checkpoint to resume from")
        try:
            state = torch.load(path, map_location=self.device, weights_only=False)
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
        except Exception as exc:  # noqa: BLE001 - any unreadable checkpoint is one clear error
            raise TrainingError(f"{path}: cannot resume from this checkpoint ({exc})") from exc
        self._log(f"resumed from iteration {state['iteration']}")
        return int(state["iteration"])

    def _finish(self, model: OSTEModel, iteration: int) -> None:
        if self.dist.is_main:
            save_checkpoint(self.run_dir / FINAL_MODEL, {
                "model": model.state_dict(), "config": self.cfg.to_dict(),
                "class_names": self.folder.class_names, "iteration": iteration,
            })
        timings = self.timer.means() if self.timer else {}
        self._emit(TrainEvent("done", iteration, self.cfg.train.iters, timings=timings,
                              message=f"finished at iteration {iteration}; model saved to {self.run_dir / FINAL_MODEL}"))
