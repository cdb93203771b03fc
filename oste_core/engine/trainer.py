"""One-step OSTE training: the engine behind `oste train` and the GUI's training worker.

Every iteration (as the paper does it): one forward pass gives the CAM, the LEM tile CAMs, the
MAF-enhanced CAM and the segmentation logits; pseudo-labels are made on the fly from the current
enhanced CAM by the FBE module (CRF included, outside autograd); user-verified masks replace them
where present; the total loss (Eq 22) updates the backbone through both branches.

The run folder's files (config, classes, versions, problems, metrics, checkpoint, model, the fast mode's
feature cache) are read and written through ``run_folder.RunFolder``.
"""
from __future__ import annotations

import dataclasses
import math
import os
import platform
import random
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler, default_collate

from oste_core import __version__
from oste_core.config import OSTEConfig
from oste_core.data import (ImageLoadError, LabelledFolder, Sample, TrainDataset, open_folder, seed_worker,
                             validate_images)
from oste_core.data.priors import read_priors
from oste_core.engine import distributed as dist_utils
from oste_core.engine.feature_cache import FeatureCache, backbone_identity, cache_cap_mb
from oste_core.engine.predictor import Predictor
from oste_core.engine.progress import JobEstimate, TrainingJob
from oste_core.engine.run_folder import CHECKPOINT, CLASSES, CONFIG, DATA, FINAL_MODEL, VERSIONS, RunError, RunFolder
from oste_core.engine.tag_suggestions import write_run_suggestions
from oste_core.labels import UNSURE, tags_multi_hot
from oste_core.losses import compute_losses
from oste_core.losses.total import warmup_losses
from oste_core.models import OSTEModel
from oste_core.models.modules.colocalisation import Colocalisation, ColocalisationFit, descriptors
from oste_core.models.modules.imagenet_prior import ImagenetPrior
from oste_core.models.modules.maf_refinement import RETEACH_STEPS
from oste_core.models.modules.pixel_probe import PixelProbe
from oste_core.suggest.corrections import has_user_labels, user_labels
from oste_core.suggest.fitting import fit_pixel_probe, teach_maf_refinement
from oste_core.models.modules.crf import make_crf
from oste_core.models.modules.fbe import make_pseudo_labels
from oste_core.utils.device import device_description, pick_device
from oste_core.utils.locks import FolderLock, this_program

PROGRESS_EVERY_S = 1.0  # a progress event at least this often, whatever train.log_every says
PASS_PHASES = {"features": "features", "priors": "priors", "probe": "pixel classifier", "affinity": "affinity"}


class TrainingError(RuntimeError):
    """Training cannot go on (diverged, no usable images, bad resume); the message says why."""


@dataclass
class TrainEvent:
    # "start" | "features" | "progress" | "checkpoint" | "priors" | "probe" | "affinity" | "log" | "done" | "cancelled"
    kind: str
    iteration: int = 0
    total: int = 0
    losses: dict[str, float] = field(default_factory=dict)
    lr: float = 0.0
    images_per_s: float = 0.0
    eta_s: float = 0.0  # seconds left in the whole job, every phase (progress.py)
    message: str = ""
    timings: dict[str, float] = field(default_factory=dict)  # mean seconds per step of each phase
    phase: str = ""  # the job's current phase ("features", "warm-up", "training", ...; progress.py)
    phase_done: int = 0  # its units done (images, iterations; seconds of an update)
    phase_total: int = 0


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


def loader_workers_available() -> int:
    """Data-loader processes this machine can run beside the training process: its usable cores minus one."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(cores - 1, 0)


class UserMasks:
    """The annotator's masks of a folder at a given size (nearest), loaded once: a verified mask (full
    supervision) or sparse corrections (their pixels override the pseudo-label); labels past the classes
    become 255."""

    def __init__(self, folder: LabelledFolder) -> None:
        self.folder = folder
        self._masks: dict[tuple[str, tuple[int, int]], tuple[np.ndarray, bool] | None] = {}

    def get(self, sample: Sample, size: tuple[int, int]) -> tuple[np.ndarray, bool] | None:
        """``(mask, is_verified)`` or None when the image has neither."""
        key = (sample.stem, size)
        if key not in self._masks:
            mask, verified = user_labels(self.folder.root, sample.stem, sample.verified_mask, size,
                                         self.folder.num_classes)
            self._masks[key] = None if mask is None else (mask, verified)
        return self._masks[key]


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
        self.run_folder = RunFolder(self.run_dir)
        self.on_event = on_event
        self.profile_phases = profile_phases
        self._cancel = threading.Event()
        self.folder: LabelledFolder | None = None
        self.device: torch.device | None = None
        self.timer: PhaseTimer | None = None
        self.feature_cache: FeatureCache | None = None
        self._usable: list[Sample] = []  # the fast mode's images with cached features
        self._colocalisation: dict | None = None  # an update keeps the run's fit
        self._imagenet_prior: dict | None = None  # and its ImageNet prior
        self._explicit_priors: dict[str, tuple[int, ...]] = {}  # priors.yaml's choices (read with the folder)
        self._pixel_probe: dict | None = None  # and its pixel probe
        self._maf_refinement: dict | None = None  # and its re-taught MAF
        self.job: JobEstimate = JobEstimate([])  # the whole job's phases and ETA, set when training starts

    def cancel(self) -> None:
        """Ask the loop to stop after the current iteration; the last state is checkpointed."""
        self._cancel.set()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    # ----------------------------------------------------------------- setup
    def _emit(self, event: TrainEvent) -> None:
        if self.on_event is not None and self.dist.is_main:
            event.phase, event.phase_done, event.phase_total, event.eta_s = self.job.snapshot()
            self.on_event(event)

    def _log(self, message: str) -> None:
        self._emit(TrainEvent("log", message=message))

    def _prepare_run_folder(self, folder: LabelledFolder, resume: bool) -> None:
        if resume and not self.run_folder.has_config():
            raise TrainingError(f"{self.run_dir}: no run to resume here (no {CONFIG} or {CHECKPOINT}); start a new run")
        if not resume and self.run_folder.has_weights():
            raise TrainingError(f"{self.run_dir}: already holds a trained run; pass --resume to continue it "
                                "or choose a new run folder")
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if resume and self.run_folder.has_config():
            saved = self.run_folder.load_config()
            saved.train.iters = self.cfg.train.iters  # resume may extend the schedule
            saved.train.device = self.cfg.train.device
            self.cfg = saved
        saved_classes = self.run_folder.load_classes()
        if resume and saved_classes is not None:
            if saved_classes != folder.class_names:
                raise TrainingError(
                    f"{self.run_folder.file(CLASSES)}: the run was trained on classes {saved_classes}, "
                    f"but {folder.root} now has {folder.class_names}; start a new run instead of --resume"
                )
        # the classifier-only warm-up never takes more than 5/6 of the schedule: the segmentation head must train
        # (set on every process, so that DDP processes run the same steps)
        self.cfg.loss.seg_warmup_iters = min(self.cfg.loss.seg_warmup_iters, 5 * self.cfg.train.iters // 6)
        if not self.dist.is_main:
            return
        self.run_folder.save_config(self.cfg)
        self.run_folder.save_classes(folder.class_names)
        self.run_folder.save_json(VERSIONS, package_versions())
        self.run_folder.save_problems(folder.problems)
        self.run_folder.save_json(DATA, {"data_dir": str(self.data_dir.resolve()), "layout": folder.layout,
                                  "images": len(folder.samples)})

    def _loader(self, dataset: TrainDataset) -> Iterator[dict]:
        t = self.cfg.train
        generator = torch.Generator().manual_seed(t.seed)
        if self.dist.enabled:
            sampler = DistributedSampler(dataset, self.dist.world_size, self.dist.rank, shuffle=True, seed=t.seed)
        else:
            sampler = RandomSampler(dataset, generator=generator)
        per_process = max(1, t.batch // self.dist.world_size) if self.dist.enabled else t.batch
        drop_last = len(dataset) >= per_process * self.dist.world_size
        workers = min(t.workers, loader_workers_available())
        loader = DataLoader(
            dataset, batch_size=per_process, sampler=sampler, num_workers=workers, drop_last=drop_last,
            worker_init_fn=seed_worker, generator=generator, pin_memory=self.device.type == "cuda",
            persistent_workers=workers > 0,
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
        return self._with_device(lambda device: self._train(device, resume=resume), "training")

    def run_update(self, budget_s: float = 45.0) -> Path:
        """Continue a finished (or stopped) run for about ``budget_s`` seconds, the verified masks as full
        supervision: every batch holds the verified images (up to half of it) and the rest at random,
        at a constant lr (``train.lr * train.update_lr_mult``). ``model.pt`` is replaced at the end.

        With ``train.freeze_backbone`` (the fast mode) the features are cached, so an update of a CPU run
        costs the heads only. Emits the same events as ``run``; ``cancel()`` keeps the weights as they were.
        """
        if budget_s <= 0:
            raise TrainingError(f"the update budget must be positive, got {budget_s} s")
        return self._with_device(lambda device: self._train(device, update_budget_s=budget_s), "update")

    def _with_device(self, train: Callable[[torch.device], Path], what: str) -> Path:
        requested = pick_device(self.cfg.train.device)
        self.dist = dist_utils.init_distributed(requested)
        self._crf = None
        lock = FolderLock(self.run_dir, f"{what} ({this_program()})")
        try:
            if self.dist.is_main and (what == "training" or self.run_dir.is_dir()):  # one writer per run folder
                self._take_run_folder(lock)
            return train(dist_utils.local_device(requested, self.dist))
        finally:
            lock.release()
            if self._crf is not None:
                self._crf.close()  # shuts down the pydensecrf process pool, if any
            dist_utils.cleanup(self.dist)

    def _take_run_folder(self, lock: FolderLock) -> None:
        """Lock the run folder (the lock names this process) and remove the temp files a killed writer left."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        lock.acquire()
        if lock.stale:
            self._log(f"{self.run_dir}: the {lock.stale.get('command', 'writer')} that held this run ended without "
                      "releasing it (killed?); taken over")
        removed = self.run_folder.remove_stale_temps()
        if removed:
            self._log(f"removed {len(removed)} temp file(s) a stopped writer left in {self.run_dir}")

    def _open_folder(self) -> LabelledFolder:
        folder = open_folder(self.data_dir)
        self._explicit_priors = read_priors(folder.root, folder.class_names)  # a bad priors.yaml stops here
        bad = validate_images(folder)
        if bad:
            self._log(f"skipped {len(bad)} unreadable image(s): " + "; ".join(bad[:5]) + (" ..." if len(bad) > 5 else ""))
        if not folder.samples:
            raise TrainingError(f"{self.data_dir}: no readable images to train on")
        if not folder.class_names:
            raise TrainingError(f"{self.data_dir}: no classes (every image has empty tags)")
        return folder

    def _train(self, device: torch.device, resume: bool = False, update_budget_s: float | None = None) -> Path:
        self.device = device
        folder = self.folder = self._open_folder()
        updating = update_budget_s is not None
        if updating:
            self._load_run_settings(folder)
        else:
            self._prepare_run_folder(folder, resume)
        cfg, t = self.cfg, self.cfg.train
        seed_everything(t.seed + self.dist.rank)

        model = OSTEModel(cfg.model, num_classes=len(folder.class_names)).to(device)
        if t.freeze_backbone:
            model.backbone.requires_grad_(False)
        use_cuda = device.type == "cuda"
        if use_cuda and t.channels_last:
            model = model.to(memory_format=torch.channels_last)
        optimizer = self._optimizer(model)
        start_iter = 0
        if updating:
            start_iter = self._load_weights(model)
        elif resume:
            start_iter = self._load_checkpoint(model, optimizer)
        train_model = model
        if self.dist.enabled:
            train_model = torch.nn.parallel.DistributedDataParallel(
                model, device_ids=[device.index] if use_cuda else None
            )
        crf = self._crf = make_crf(cfg.model.crf_backend, iters=cfg.model.crf_iters, workers=t.crf_workers,
                                   device=device)
        amp_dtype = torch.bfloat16 if (use_cuda and t.amp and torch.cuda.is_bf16_supported()) else None
        mode = "fast mode (frozen backbone, cached features)" if t.freeze_backbone else "full fine-tuning"
        corrected = sum(has_user_labels(folder.root, sample) for sample in folder.samples)
        what = (f"updating for {update_budget_s:.0f} s with {corrected} verified or corrected image(s)" if updating
                else "training")
        end_iter = start_iter if updating else t.iters
        self.job = TrainingJob(cfg, len(folder.samples), start_iter, update_budget_s, RETEACH_STEPS)
        self._emit(TrainEvent(
            "start", start_iter, end_iter,
            message=f"{what}: {len(folder.samples)} images, {len(folder.class_names)} classes on "
                    f"{device_description(device)}, {mode}; CRF backend {crf.backend}; "
                    f"backbone {cfg.model.backbone}; run folder {self.run_dir}",
        ))
        if not updating and start_iter >= t.iters:
            self._finish(model, start_iter)
            return self.run_dir

        if t.freeze_backbone:
            step = self._fast_steps(model, folder, crf, updating)
        else:
            step = self._full_steps(train_model, model, folder, crf, amp_dtype, updating)
        timer = self.timer = PhaseTimer(device, enabled=self.profile_phases)
        window_start, window_iters, last_report = time.perf_counter(), 0, 0.0
        deadline = time.perf_counter() + update_budget_s if updating else math.inf
        train_model.train()
        if t.freeze_backbone:
            model.backbone.eval()
        iteration = start_iter
        self.job.loop_started()
        try:
            while (iteration < t.iters) if not updating else (time.perf_counter() < deadline or iteration == start_iter):
                if dist_utils.any_flag(self.cancelled, device, self.dist):
                    if updating:  # the run's weights stay as they were
                        self._emit(TrainEvent("cancelled", iteration, end_iter, message="update cancelled; model unchanged"))
                        return self.run_dir
                    self._save_checkpoint(model, optimizer, iteration)
                    self._emit(TrainEvent("cancelled", iteration, t.iters,
                                          message=f"stopped at iteration {iteration}; checkpoint kept"))
                    return self.run_dir
                timer.start()
                lr = self._set_lr(optimizer, iteration, constant=updating)
                optimizer.zero_grad(set_to_none=True)
                losses, unsure = step(iteration)
                total = losses["total"]
                # checked after the backward is queued (the GPU keeps busy meanwhile), before any weight changes
                if dist_utils.any_flag(not bool(torch.isfinite(total)), device, self.dist):
                    raise TrainingError(self._divergence_message(losses, iteration))
                if t.grad_clip > 0:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), t.grad_clip)
                optimizer.step()
                timer.mark("backward_step")
                timer.steps += 1
                iteration += 1
                self.job.iteration_done(iteration)
                window_iters += 1
                if updating:
                    end_iter = iteration

                now = time.perf_counter()
                # the time rule only without DDP: a report all-reduces the losses, so every process must decide alike
                if (iteration % t.log_every == 0 or iteration == end_iter or iteration == start_iter + 1
                        or (not self.dist.enabled and now - last_report >= PROGRESS_EVERY_S)):
                    images_per_s = window_iters * t.batch / max(now - window_start, 1e-9)
                    window_start, window_iters, last_report = now, 0, now
                    self._report_progress(iteration, end_iter, losses, unsure, lr, images_per_s)
                if (not updating and t.checkpoint_every > 0 and iteration % t.checkpoint_every == 0
                        and iteration < t.iters):
                    self._save_checkpoint(model, optimizer, iteration)
                    self._emit(TrainEvent("checkpoint", iteration, t.iters, message=f"checkpoint at {iteration}"))
        except KeyboardInterrupt:
            if not updating:
                self._save_checkpoint(model, optimizer, iteration)
            self._emit(TrainEvent("cancelled", iteration, end_iter, message=f"interrupted at {iteration}"
                                  + ("; model unchanged" if updating else "; checkpoint kept")))
            return self.run_dir
        if not updating:
            self._save_checkpoint(model, optimizer, iteration)
        self._finish(model, iteration)
        return self.run_dir

    def _batch_indices(self, folder: LabelledFolder, updating: bool) -> Iterator[list[int]]:
        """Sample indices of each fast-mode (or update) batch: a seeded shuffle, epoch after epoch; an
        update puts the images with verified masks or corrections first (up to half of the batch, in rotation)."""
        t = self.cfg.train
        generator = torch.Generator().manual_seed(t.seed)
        count = len(folder.samples)
        verified = [i for i, s in enumerate(folder.samples) if has_user_labels(folder.root, s)] if updating else []
        quota = min(len(verified), max(1, t.batch // 2)) if verified else 0
        order: list[int] = []
        turn = 0
        while True:
            picked = [verified[(turn + j) % len(verified)] for j in range(quota)]
            turn += quota
            while len(picked) < min(t.batch, count):
                if not order:
                    order = torch.randperm(count, generator=generator).tolist()
                index = order.pop()
                if index not in picked:
                    picked.append(index)
            yield picked

    def _fast_steps(self, model: OSTEModel, folder: LabelledFolder, crf, updating: bool) -> Callable:
        """The fast mode's step: the heads on cached frozen-backbone features, one image at a time
        (images keep their own size), gradients accumulated over the batch."""
        cfg, device = self.cfg, self.device
        cache = self.feature_cache = FeatureCache(self.run_dir, model, backbone_identity(cfg.model), cfg.train.fast_max_side,
                                                  cfg.train.max_side, device,
                                                  cap_mb=cache_cap_mb(cfg.train.feature_cache_mb, len(folder.samples)))
        usable = self._usable = self._cache_features(cache, folder)
        masks = UserMasks(folder)
        batches = self._batch_indices(dataclasses.replace(folder, samples=usable), updating)
        stage_count = len(model.backbone.stage_channels)

        def step(iteration: int) -> tuple[dict[str, torch.Tensor], float]:
            indices = next(batches)
            self.timer.mark("data")
            sums: dict[str, torch.Tensor] = {}
            unsure, pixels = 0, 0
            for index in indices:
                sample = usable[index]
                features = cache.get(sample.image_path)
                image = features.image_uint8[None].to(device)
                size = tuple(image.shape[-2:])
                batch = {"tags": tags_multi_hot(folder.tag_indices(sample), folder.num_classes, device)[None],
                         "image_uint8": image,
                         "valid": torch.ones(1, *size, dtype=torch.bool, device=device)}
                # classification only (no pseudo-labels needed); never in an update: the verified masks must teach
                warmup = not updating and iteration < cfg.loss.seg_warmup_iters
                out = model.forward_features(features.stage_list(stage_count, device), features.tile_batch(device), size,
                                             classify_only=warmup)
                if warmup:
                    losses = warmup_losses(out, batch["tags"], cfg.loss)
                else:
                    with torch.no_grad():
                        found = masks.get(sample, size)
                        if found is None or not found[1]:
                            pseudo = make_pseudo_labels(out["enhanced_cam"].detach().float(), image, batch["tags"],
                                                        cfg.model, crf)
                        if found is not None:  # a verified mask replaces the pseudo-label, corrections override it
                            user = torch.from_numpy(found[0]).long()[None].to(device)
                            pseudo = user if found[1] else torch.where(user != UNSURE, user, pseudo)
                    losses = compute_losses(out, batch, pseudo, cfg.loss, max(iteration, cfg.loss.seg_warmup_iters))
                    unsure += int((pseudo == UNSURE).sum())
                    pixels += pseudo.numel()
                (losses["total"] / len(indices)).backward()
                for key, value in losses.items():
                    sums[key] = sums.get(key, 0.0) + value.detach() / len(indices)
            if self.dist.enabled:  # the heads run outside the DDP wrapper: average their gradients by hand
                for param in model.parameters():
                    if param.grad is not None:
                        param.grad.copy_(dist_utils.all_reduce_mean(param.grad, self.dist))
            self.timer.mark("forward_losses_backward")
            return sums, unsure / max(pixels, 1)

        return step

    def _cache_features(self, cache: FeatureCache, folder: LabelledFolder) -> list[Sample]:
        """Compute the missing cached features (progress as "log" events); unreadable images are skipped."""
        usable: list[Sample] = []
        keys: set[str] = set()
        total = len(folder.samples)
        progress = self._pass_progress("features", "backbone features", time.perf_counter())
        missing = [sample.image_path.is_file() and not cache.has(sample.image_path) for sample in folder.samples]
        cache.plan(sum(missing))  # the free-space check before the first new file
        self.job.set_total("features", sum(missing))  # the phase counts the images whose features are computed
        self.job.begin("features")
        computed = 0
        for done, sample in enumerate(folder.samples, start=1):
            if self.cancelled:
                break
            try:
                cache.get(sample.image_path)
                computed += missing[done - 1]
                self.job.advance("features", computed)
                keys.add(cache.key(sample.image_path))
                usable.append(sample)
            except ImageLoadError as exc:
                self._log(f"skipped: {exc}")
            progress(done, total)
        for file in cache.rebuilt:
            self._log(f"rebuilt an unreadable feature cache file: {file}")
        removed = cache.prune(keys) if len(keys) == total else 0
        if removed:
            self._log(f"removed {removed} stale feature cache file(s)")
        if not usable:
            raise TrainingError(f"{self.data_dir}: no readable images to train on")
        return usable

    def _full_steps(self, train_model, model: OSTEModel, folder: LabelledFolder, crf, amp_dtype, updating: bool):
        """Full fine-tuning's step: an augmented batch from the data loader through the whole network."""
        cfg, t, device = self.cfg, self.cfg.train, self.device
        backbone = model.backbone
        dataset = TrainDataset(
            folder, crop=t.crop, scale_range=tuple(t.scale_range), hflip=t.hflip, max_side=t.max_side,
            mean=tuple(backbone.input_mean), std=tuple(backbone.input_std),
        )
        if updating:  # the verified images in every batch, loaded in this process
            batches = (default_collate([dataset[i] for i in indices]) for indices in self._batch_indices(folder, True))
        else:
            batches = self._loader(dataset)
        use_cuda = device.type == "cuda"

        def step(iteration: int) -> tuple[dict[str, torch.Tensor], float]:
            batch = next(batches)
            batch = {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}
            images = batch["image"]
            if use_cuda and t.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            self.timer.mark("data")
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                out = train_model(images)
            self.timer.mark("forward")
            with torch.no_grad():
                pseudo = make_pseudo_labels(
                    out["enhanced_cam"].detach().float(), batch["image_uint8"], batch["tags"],
                    cfg.model, crf, valid=batch["valid"],
                )
                verified = batch["has_mask"].view(-1, 1, 1)
                pseudo = torch.where(verified, batch["mask"], pseudo)
            self.timer.mark("pseudo_labels")
            learning_iteration = max(iteration, cfg.loss.seg_warmup_iters) if updating else iteration
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                losses = compute_losses(out, batch, pseudo, cfg.loss, learning_iteration)
            self.timer.mark("losses")
            losses["total"].backward()
            return losses, (pseudo == UNSURE).float().mean()

        return step

    # --------------------------------------------------------------- helpers
    def _report_progress(self, iteration: int, end_iter: int, losses: dict[str, torch.Tensor], unsure,
                         lr: float, images_per_s: float) -> None:
        """A "progress" event and a metrics.jsonl line (the losses are averaged over DDP processes)."""
        values = {k: float(dist_utils.all_reduce_mean(torch.as_tensor(v).detach().float(), self.dist))
                  for k, v in losses.items()}
        self._emit(TrainEvent("progress", iteration, end_iter, values, lr, images_per_s, timings=self.timer.means()))
        if self.dist.is_main:
            self.run_folder.append_metrics({"iteration": iteration, "lr": lr, "images_per_s": images_per_s,
                                     "pseudo_unsure": float(unsure), **values})

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

    def _set_lr(self, optimizer: torch.optim.Optimizer, iteration: int, constant: bool = False) -> float:
        """Poly schedule over ``train.iters``; ``constant`` (updates): ``train.update_lr_mult`` of the start lr."""
        t = self.cfg.train
        factor = t.update_lr_mult if constant else (1.0 - iteration / max(t.iters, 1)) ** t.poly_power
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
        self.run_folder.save_weights(CHECKPOINT, {
            "model": model.state_dict(), "optimizer": optimizer.state_dict(), "iteration": iteration,
            "config": self.cfg.to_dict(), "class_names": self.folder.class_names,
        })

    def _load_checkpoint(self, model: OSTEModel, optimizer: torch.optim.Optimizer) -> int:
        path = self.run_folder.file(CHECKPOINT)
        if not path.exists():  # stopped (killed, disk full) before its first checkpoint; cached features are kept
            self._log(f"{path}: no checkpoint yet; the run starts again from iteration 0")
            return 0
        try:
            state = self.run_folder.load_weights(path, self.device)
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
        except RunError as exc:  # names the damage and what to do
            raise TrainingError(str(exc)) from exc
        except Exception as exc:  # noqa: BLE001 - any unreadable checkpoint is one clear error
            raise TrainingError(f"{path}: cannot resume from this checkpoint ({exc})") from exc
        self._log(f"resumed from iteration {state['iteration']}")
        return int(state["iteration"])

    def _load_run_settings(self, folder: LabelledFolder) -> None:
        """An update trains with the run's own settings (only the device is taken from ``cfg``)."""
        if not self.run_folder.has_config():
            raise TrainingError(f"{self.run_folder.file(CONFIG)}: not found; an update continues a trained run "
                                "(train one first)")
        saved = self.run_folder.load_config()
        saved.train.device = self.cfg.train.device
        self.cfg = saved
        saved_classes = self.run_folder.load_classes() or []
        if saved_classes != folder.class_names:
            raise TrainingError(f"{self.run_folder.file(CLASSES)}: the run knows classes {saved_classes}, but {folder.root} now has "
                                f"{folder.class_names}; train a new run to use the new classes")

    def _load_weights(self, model: OSTEModel) -> int:
        """The run's latest weights (``model.pt``, else ``checkpoint.pt``) for an update; their iteration."""
        try:
            path = self.run_folder.weights_file()
            state = self.run_folder.load_weights(path, self.device)
            model.load_state_dict(state["model"])
            self._colocalisation = state.get("colocalisation")  # the features are frozen: an update keeps the fit
            self._imagenet_prior = state.get("imagenet_prior")
            self._pixel_probe = state.get("pixel_probe")
            self._maf_refinement = state.get("maf_refinement")
        except (RunError, RuntimeError, KeyError) as exc:
            raise TrainingError(f"cannot update from this run: {exc}") from exc
        return int(state.get("iteration", 0))

    def _finish(self, model: OSTEModel, iteration: int) -> None:
        if self.dist.is_main:
            payload = {"model": model.state_dict(), "config": self.cfg.to_dict(),
                       "class_names": self.folder.class_names, "iteration": iteration}
            colocalisation = self._colocalisation if self._colocalisation is not None else self._fit_colocalisation(model)
            if colocalisation is not None:
                payload["colocalisation"] = colocalisation
            imagenet_prior = self._imagenet_prior if self._imagenet_prior is not None else self._make_imagenet_prior(model)
            if imagenet_prior is not None:
                payload["imagenet_prior"] = imagenet_prior
            pixel_probe = self._pixel_probe
            if pixel_probe is None:
                pixel_probe = self._fit_pixel_probe(model, colocalisation, imagenet_prior)
            if pixel_probe is not None:
                payload["pixel_probe"] = pixel_probe
            maf_refinement = self._maf_refinement
            if maf_refinement is None:
                maf_refinement = self._teach_maf_refinement(model, colocalisation, imagenet_prior, pixel_probe)
            if maf_refinement is not None:
                payload["maf_refinement"] = maf_refinement
            self.run_folder.save_weights(FINAL_MODEL, payload)
            self._suggest_tags()
        timings = self.timer.means() if self.timer else {}
        self.job.finish()
        self._emit(TrainEvent("done", iteration, max(iteration, self.cfg.train.iters), timings=timings,
                              message=f"finished at iteration {iteration}; model saved to {self.run_dir / FINAL_MODEL}"))

    def _suggest_tags(self) -> None:
        """The suggested tags of the folder's untagged images, into the run folder (``tag_suggestions.py``)."""
        if self.folder.untagged:
            start = time.perf_counter()
            path = write_run_suggestions(self.run_dir, self.folder, device=str(self.device))
            self._log(f"suggested the tags of {len(self.folder.untagged)} untagged images in "
                      f"{time.perf_counter() - start:.0f} s ({path.name})")

    def _make_imagenet_prior(self, model: OSTEModel) -> dict | None:
        """The fast mode's ImageNet class prior (``imagenet_prior.py``): the frozen backbone's ImageNet classifier
        and the ImageNet classes of the folder's classes; None when either is missing."""
        if not (self.cfg.train.freeze_backbone and self.cfg.model.imagenet_prior_weight > 0):
            return None
        prior = ImagenetPrior.for_classes(self.folder.class_names, model.backbone.imagenet_classifier,
                                          self._explicit_priors)
        if prior is None:
            self._log("no ImageNet class prior: the backbone weights have no ImageNet classifier or no class is an "
                      "ImageNet concept")
            return None
        return prior.to_state()

    def _fast_predictor(self, model: OSTEModel, colocalisation: dict | None, imagenet_prior: dict | None,
                        pixel_probe: dict | None = None) -> Predictor:
        """A predictor of the model being trained, with the fast mode's fits so far."""
        return Predictor(
            model, self.cfg, self.folder.class_names, self.device, run_dir=self.run_dir,
            colocalisation=None if colocalisation is None else Colocalisation.from_state(colocalisation),
            imagenet_prior=None if imagenet_prior is None else ImagenetPrior.from_state(imagenet_prior),
            pixel_probe=None if pixel_probe is None else PixelProbe.from_state(pixel_probe))

    def _pass_progress(self, kind: str, what: str, start: float) -> Callable[[int, int], None]:
        """An ``on_progress`` that counts the pass's phase in the job (but the feature pass: its own count) and
        emits ``kind`` events (at most one per PROGRESS_EVERY_S) for a pass over the images."""
        last = start

        def progress(done: int, total: int) -> None:
            nonlocal last
            if kind != "features":
                self.job.advance(PASS_PHASES[kind], done)
            now = time.perf_counter()
            if now - last >= PROGRESS_EVERY_S or done == total:
                last = now
                self._emit(TrainEvent(kind, done, total, message=f"{what} {done}/{total} ({now - start:.0f} s)"))
        return progress

    def _fit_pixel_probe(self, model: OSTEModel, colocalisation: dict | None, imagenet_prior: dict | None) -> dict | None:
        """The fast mode's folder pixel classifier (``pixel_probe.py``), taught by every usable image's suggestion."""
        if not (self.cfg.train.freeze_backbone and self.cfg.model.pixel_probe_weight > 0 and self._usable):
            return None
        start = time.perf_counter()
        was_training = model.training
        predictor = self._fast_predictor(model, colocalisation, imagenet_prior)
        fitted = fit_pixel_probe(predictor, self.folder, self._usable, cancel=lambda: self.cancelled,
                                 on_progress=self._pass_progress("probe", "pixel classifier: suggestion", start))
        model.train(was_training)
        if fitted is None:
            return None
        probe, teaching = fitted
        teaching.save(self.run_dir)  # a correction refits the probe from it (suggest/teaching.py)
        cache = predictor.feature_cache  # every image's prediction-scale features are now cached: drop stale ones
        cache.prune({cache.key(sample.image_path) for sample in self._usable})
        self._log(f"pixel classifier fitted on {len(self._usable)} images in {time.perf_counter() - start:.0f} s")
        return probe.to_state()

    def _teach_maf_refinement(self, model: OSTEModel, colocalisation: dict | None, imagenet_prior: dict | None,
                              pixel_probe: dict | None) -> dict | None:
        """The fast mode's MAF re-taught on the pseudo-labels of the suggestion's maps (``maf_refinement.py``)."""
        if not (self.cfg.train.freeze_backbone and model.maf is not None and self.cfg.model.suggestion_maf_weight > 0
                and self._usable):
            return None
        start = time.perf_counter()
        was_training = model.training
        predictor = self._fast_predictor(model, colocalisation, imagenet_prior, pixel_probe)
        refinement = teach_maf_refinement(
            predictor, self.folder, self._usable, cancel=lambda: self.cancelled,
            on_progress=self._pass_progress("affinity", "MAF affinity: pseudo-labels, then steps", start))
        model.train(was_training)
        if refinement is None:
            return None
        self._log(f"MAF affinity re-taught on {len(self._usable)} images in {time.perf_counter() - start:.0f} s")
        return refinement.state_dict()

    @torch.no_grad()
    def _fit_colocalisation(self, model: OSTEModel) -> dict | None:
        """The fast mode's class co-localisation fit over the cached features (``colocalisation.py``)."""
        if not (self.cfg.train.freeze_backbone and self.cfg.model.colocalisation_weight > 0 and self._usable):
            return None
        start = time.perf_counter()
        fit = ColocalisationFit()
        stage_count = len(model.backbone.stage_channels)
        was_training = model.training
        model.eval()
        progress = self._pass_progress("priors", "class priors: co-localisation", start)
        for done, sample in enumerate(self._usable, start=1):
            features = self.feature_cache.get(sample.image_path)
            stages = features.stage_list(stage_count, self.device)
            out = model.forward_features(stages, features.tile_batch(self.device), tuple(features.image_uint8.shape[-2:]),
                                         classify_only=True)
            fit.add(descriptors(stages), out["cam"][0], self.folder.tag_indices(sample))
            progress(done, len(self._usable))
        model.train(was_training)
        result = fit.result()
        self._log(f"class co-localisation fitted on {len(self._usable)} images in {time.perf_counter() - start:.0f} s")
        return None if result is None else result.to_state()
