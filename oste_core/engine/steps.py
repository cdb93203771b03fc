"""The training step of each mode, as the trainer's loop calls it: ``step(iteration) -> (losses, unsure share)``,
the gradients accumulated (the loop clips them and steps the optimiser).

* the fast mode (`fast_steps`): the heads on the cached frozen-backbone features (`cache_features` computes
  the missing ones first), one image at a time, each at its own size;
* full fine-tuning (`full_steps`): an augmented batch from the data loader (`loader_batches`) through the
  whole network.

Both make the FBE pseudo-labels on the fly from the current enhanced CAM; the annotator's verified masks
replace them and sparse corrections override them. The images of each batch (`batch_indices`): a seeded
shuffle; an update (``update.py``) puts the images with verified masks or corrections first.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Callable, Iterator

import torch
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler, default_collate

from oste_core.config import OSTEConfig, TrainConfig
from oste_core.data import ImageLoadError, LabelledFolder, Sample, TrainDataset, seed_worker
from oste_core.engine import distributed as dist_utils
from oste_core.engine.events import PhaseTimer
from oste_core.engine.feature_cache import FeatureCache
from oste_core.engine.progress import JobEstimate
from oste_core.engine.update import UserMasks
from oste_core.labels import UNSURE, tags_multi_hot
from oste_core.losses import compute_losses
from oste_core.losses.total import warmup_losses
from oste_core.models import OSTEModel
from oste_core.models.modules.crf import DenseCRF
from oste_core.models.modules.fbe import make_pseudo_labels
from oste_core.suggest.corrections import has_user_labels

Step = Callable[[int], tuple[dict[str, torch.Tensor], float]]


def loader_workers_available() -> int:
    """Data-loader processes this machine can run beside the training process: its usable cores minus one."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(cores - 1, 0)


def loader_batches(dataset: TrainDataset, train: TrainConfig, dist: dist_utils.DistInfo,
                   device: torch.device) -> Iterator[dict]:
    """Full fine-tuning's batches, epoch after epoch: a seeded shuffle (split over the DDP processes)."""
    generator = torch.Generator().manual_seed(train.seed)
    if dist.enabled:
        sampler = DistributedSampler(dataset, dist.world_size, dist.rank, shuffle=True, seed=train.seed)
    else:
        sampler = RandomSampler(dataset, generator=generator)
    per_process = max(1, train.batch // dist.world_size) if dist.enabled else train.batch
    drop_last = len(dataset) >= per_process * dist.world_size
    workers = min(train.workers, loader_workers_available())
    loader = DataLoader(
        dataset, batch_size=per_process, sampler=sampler, num_workers=workers, drop_last=drop_last,
        worker_init_fn=seed_worker, generator=generator, pin_memory=device.type == "cuda",
        persistent_workers=workers > 0,
    )
    epoch = 0
    while True:
        if isinstance(sampler, DistributedSampler):
            sampler.set_epoch(epoch)
        yield from loader
        epoch += 1


def batch_indices(folder: LabelledFolder, train: TrainConfig, updating: bool) -> Iterator[list[int]]:
    """Sample indices of each fast-mode (or update) batch: a seeded shuffle, epoch after epoch; an
    update puts the images with verified masks or corrections first (up to half of the batch, in rotation)."""
    generator = torch.Generator().manual_seed(train.seed)
    count = len(folder.samples)
    verified = [i for i, s in enumerate(folder.samples) if has_user_labels(folder.root, s)] if updating else []
    quota = min(len(verified), max(1, train.batch // 2)) if verified else 0
    order: list[int] = []
    turn = 0
    while True:
        picked = [verified[(turn + j) % len(verified)] for j in range(quota)]
        turn += quota
        while len(picked) < min(train.batch, count):
            if not order:
                order = torch.randperm(count, generator=generator).tolist()
            index = order.pop()
            if index not in picked:
                picked.append(index)
        yield picked


def cache_features(cache: FeatureCache, folder: LabelledFolder, job: JobEstimate,
                   progress: Callable[[int, int], None], log: Callable[[str], None],
                   cancelled: Callable[[], bool]) -> list[Sample]:
    """Compute the missing cached features (``job``'s "features" phase counts them); return the samples whose
    features are cached. Unreadable images are skipped (logged), and stale cache files removed once every
    image was read."""
    usable: list[Sample] = []
    keys: set[str] = set()
    total = len(folder.samples)
    missing = [sample.image_path.is_file() and not cache.has(sample.image_path) for sample in folder.samples]
    cache.plan(sum(missing))  # the free-space check before the first new file
    job.set_total("features", sum(missing))  # the phase counts the images whose features are computed
    job.begin("features")
    computed = 0
    for done, sample in enumerate(folder.samples, start=1):
        if cancelled():
            break
        try:
            cache.get(sample.image_path)
            computed += missing[done - 1]
            job.advance("features", computed)
            keys.add(cache.key(sample.image_path))
            usable.append(sample)
        except ImageLoadError as exc:
            log(f"skipped: {exc}")
        progress(done, total)
    for file in cache.rebuilt:
        log(f"rebuilt an unreadable feature cache file: {file}")
    removed = cache.prune(keys) if len(keys) == total else 0
    if removed:
        log(f"removed {removed} stale feature cache file(s)")
    return usable


def fast_steps(model: OSTEModel, folder: LabelledFolder, usable: list[Sample], cache: FeatureCache,
               cfg: OSTEConfig, device: torch.device, crf: DenseCRF, timer: PhaseTimer, dist: dist_utils.DistInfo,
               updating: bool) -> Step:
    """The fast mode's step: the heads on the cached features of ``usable`` images, one image at a time
    (images keep their own size), gradients accumulated over the batch."""
    masks = UserMasks(folder)
    batches = batch_indices(dataclasses.replace(folder, samples=usable), cfg.train, updating)
    stage_count = len(model.backbone.stage_channels)

    def step(iteration: int) -> tuple[dict[str, torch.Tensor], float]:
        indices = next(batches)
        timer.mark("data")
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
        if dist.enabled:  # the heads run outside the DDP wrapper: average their gradients by hand
            for param in model.parameters():
                if param.grad is not None:
                    param.grad.copy_(dist_utils.all_reduce_mean(param.grad, dist))
        timer.mark("forward_losses_backward")
        return sums, unsure / max(pixels, 1)

    return step


def full_steps(train_model: torch.nn.Module, model: OSTEModel, folder: LabelledFolder, cfg: OSTEConfig,
               device: torch.device, crf: DenseCRF, amp_dtype: torch.dtype | None, timer: PhaseTimer,
               dist: dist_utils.DistInfo, updating: bool) -> Step:
    """Full fine-tuning's step: an augmented batch through ``train_model`` (``model``, DDP-wrapped under
    torchrun)."""
    t = cfg.train
    backbone = model.backbone
    dataset = TrainDataset(
        folder, crop=t.crop, scale_range=tuple(t.scale_range), hflip=t.hflip, max_side=t.max_side,
        mean=tuple(backbone.input_mean), std=tuple(backbone.input_std),
    )
    if updating:  # the verified images in every batch, loaded in this process
        batches = (default_collate([dataset[i] for i in indices]) for indices in batch_indices(folder, t, True))
    else:
        batches = loader_batches(dataset, t, dist, device)
    use_cuda = device.type == "cuda"

    def step(iteration: int) -> tuple[dict[str, torch.Tensor], float]:
        batch = next(batches)
        batch = {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}
        images = batch["image"]
        if use_cuda and t.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        timer.mark("data")
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
        learning_iteration = max(iteration, cfg.loss.seg_warmup_iters) if updating else iteration
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            losses = compute_losses(out, batch, pseudo, cfg.loss, learning_iteration)
        timer.mark("losses")
        losses["total"].backward()
        return losses, (pseudo == UNSURE).float().mean()

    return step
