"""One-step OSTE training: the engine behind `oste train`, `oste update` and the GUI's training worker.

Every iteration (as the paper does it): one forward pass gives the CAM, the LEM tile CAMs, the
MAF-enhanced CAM and the segmentation logits; pseudo-labels are made on the fly from the current
enhanced CAM by the FBE module (CRF included, outside autograd); user-verified masks replace them
where present; the total loss (Eq 22) updates the backbone through both branches.

This module holds the loop; each mode's step is in ``steps.py``, the update's rules in ``update.py``, the
weights on disk in ``checkpoints.py``, and what follows training, the suggestion stage's fits, in
``oste_core/suggest/stage_fit.py``. The run folder's files (config, classes, versions, problems, metrics,
checkpoint, model, the fast mode's feature cache) are read and written through ``run_folder.RunFolder``.
"""
from __future__ import annotations

import math
import threading
import time
from pathlib import Path
from typing import Callable

import torch

from oste_core.config import OSTEConfig
from oste_core.data import LabelledFolder, Sample, open_folder, validate_images
from oste_core.data.priors import read_priors
from oste_core.engine import distributed as dist_utils
from oste_core.engine.checkpoints import (drop_checkpoint, load_checkpoint, load_run_settings, load_weights,
                                          package_versions, save_checkpoint, save_model, seed_everything)
from oste_core.engine.events import PhaseTimer, TrainEvent, TrainingError
from oste_core.engine.feature_cache import FeatureCache, backbone_identity, cache_cap_mb
from oste_core.engine.progress import JobEstimate, TrainingJob
from oste_core.engine.run_folder import CHECKPOINT, CLASSES, CONFIG, DATA, FINAL_MODEL, VERSIONS, RunFolder
from oste_core.engine.steps import cache_features, fast_steps, full_steps
from oste_core.engine.tag_suggestions import write_run_suggestions
from oste_core.models import OSTEModel
from oste_core.models.modules.crf import make_crf
from oste_core.models.modules.maf_refinement import RETEACH_STEPS
from oste_core.suggest.corrections import has_user_labels
from oste_core.suggest.refresh import prepare_suggestions
from oste_core.suggest.stage_fit import SuggestionStageFit
from oste_core.suggest.state import SuggestionState
from oste_core.utils.device import device_description, pick_device
from oste_core.utils.locks import FolderLock, this_program

PROGRESS_EVERY_S = 1.0  # a progress event at least this often, whatever train.log_every says
PASS_PHASES = {"features": "features", "priors": "priors", "probe": "pixel classifier", "affinity": "affinity",
               "suggestions": "suggestions"}


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
        self._explicit_priors: dict[str, tuple[int, ...]] = {}  # priors.yaml's choices (read with the folder)
        self._kept_suggestion = SuggestionState()  # an update keeps the run's suggestion stage fits
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

    # ------------------------------------------------------------------ run
    def run(self, resume: bool = False) -> Path:
        """Train to ``cfg.train.iters`` (or until cancelled); return the run folder."""
        return self._with_device(lambda device: self._train(device, resume=resume), "training")

    def run_update(self, budget_s: float = 45.0) -> Path:
        """Continue a finished (or stopped) run for about ``budget_s`` seconds with the annotator's verified
        masks and corrections (``update.py``); return the run folder.

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
            self.cfg = load_run_settings(self.run_folder, self.cfg, folder)
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
            start_iter, self._kept_suggestion = load_weights(self.run_folder, model, device)
        elif resume:
            start_iter = load_checkpoint(self.run_folder, model, optimizer, device, self._log)
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

        timer = self.timer = PhaseTimer(device, enabled=self.profile_phases)
        if t.freeze_backbone:
            usable = self._cache_features(model, folder)
            step = fast_steps(model, folder, usable, self.feature_cache, cfg, device, crf, timer, self.dist, updating)
        else:
            step = full_steps(train_model, model, folder, cfg, device, crf, amp_dtype, timer, self.dist, updating)
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

    def _cache_features(self, model: OSTEModel, folder: LabelledFolder) -> list[Sample]:
        """The fast mode's feature cache, its missing features computed: the images whose features it holds."""
        cfg = self.cfg
        self.feature_cache = FeatureCache(self.run_dir, model, backbone_identity(cfg.model), cfg.train.fast_max_side,
                                          cfg.train.max_side, self.device,
                                          cap_mb=cache_cap_mb(cfg.train.feature_cache_mb, len(folder.samples)))
        progress = self._pass_progress("features", "backbone features", time.perf_counter())
        usable = self._usable = cache_features(self.feature_cache, folder, self.job, progress, self._log,
                                               lambda: self.cancelled)
        if not usable:
            raise TrainingError(f"{self.data_dir}: no readable images to train on")
        return usable

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
        if self.dist.is_main:  # one writer under DDP
            save_checkpoint(self.run_folder, model, optimizer, iteration, self.cfg, self.folder.class_names)

    def _finish(self, model: OSTEModel, iteration: int) -> None:
        """The suggestion stage's fits (``suggest/stage_fit.py``), ``model.pt`` and the tag suggestions."""
        if self.dist.is_main:
            stage = SuggestionStageFit(model, self.cfg, self.folder, self._usable, self.feature_cache, self.device,
                                       self.run_dir, self._explicit_priors, self._pass_progress, self._log,
                                       lambda: self.cancelled)
            suggestion = stage.fit(self._kept_suggestion)
            save_model(self.run_folder, model, self.cfg, self.folder.class_names, iteration, suggestion)
            drop_checkpoint(self.run_folder)
            self._prepare_suggestions()
            self._suggest_tags()
        timings = self.timer.means() if self.timer else {}
        self.job.finish()
        self._emit(TrainEvent("done", iteration, max(iteration, self.cfg.train.iters), timings=timings,
                              message=f"finished at iteration {iteration}; model saved to {self.run_dir / FINAL_MODEL}"))

    def _prepare_suggestions(self) -> None:
        """Every photo's suggestion, stored in the run (``suggest/refresh.py``); after an update only the stale ones
        are deleted, and the GUI or the export makes the new ones when asked."""
        if not self.cfg.train.freeze_backbone:
            return
        start = time.perf_counter()
        predict = "suggestions" in self.job.phases and not self.cancelled
        problems = prepare_suggestions(self.run_dir, self.folder, device=str(self.device), predict=predict,
                                       cancel=lambda: self.cancelled,
                                       on_progress=self._pass_progress("suggestions", "suggestions", start))
        if not predict:
            return
        for problem in problems:
            self._log(problem)
        self._log(f"made every suggestion ({len(self.folder.samples)} images) in {time.perf_counter() - start:.0f} s")

    def _suggest_tags(self) -> None:
        """The suggested tags of the folder's untagged images, into the run folder (``tag_suggestions.py``)."""
        if self.folder.untagged:
            start = time.perf_counter()
            path = write_run_suggestions(self.run_dir, self.folder, device=str(self.device))
            self._log(f"suggested the tags of {len(self.folder.untagged)} untagged images in "
                      f"{time.perf_counter() - start:.0f} s ({path.name})")

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
