"""MAF on the suggestion's maps (fast mode): Eq 8 applied to the prior-mixed maps, with an affinity re-taught
on the run's best pseudo-labels (step 5 of the suggestion recipe, ``suggest/__init__.py``).

During a fast-mode training MAF learns its affinity (``losses/affinity.py``) from the pseudo-labels of the
enhanced CAM alone. At the end of training FBE (Eqs 9-13) on the prior-mixed maps
(``suggest/recipe.suggestion_maps``) gives far better ones, right on more of the pixels. A copy of the trained
MAF is taught again on those, at the prediction scale, with the same affinity loss on ``pixels`` sampled
labelled pixels of each of ``batch`` images per Adam step (every pixel pair of the grid costs far more time
for no better suggestion). It then refines the maps FBE and the suggestion read, in Eq 8's form:

    maps <- (1 - weight) * maps + weight * A . maps        (``model.suggestion_maf_weight``, 0.5 = Eq 8's average)

Off by default (weight 0: nothing is taught or applied): it lifts the suggestion on some folders of real
photos but lowers it on others and on the synthetic demo, more than their noise, at every weight and MAF power
tried (``docs/BENCHMARKS.md``); ``--set model.suggestion_maf_weight=0.5`` turns it on. The run's MAF itself
is left as it was: the enhanced CAM layer and the pixel classifier (fitted before) keep the trained affinity.
"""
from __future__ import annotations

import copy
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from oste_core.labels import UNSURE
from oste_core.losses.affinity import pair_affinity_loss

from .cam import resize_maps
from .maf import MultilevelActivationFusion

RETEACH_STEPS = 100  # Adam steps of the re-teaching (more overfit the pseudo-labels: docs/BENCHMARKS.md)


def refine_maps(maf: MultilevelActivationFusion, stage_features: Sequence[Tensor], maps: Tensor, weight: float) -> Tensor:
    """``(1 - weight) * maps + weight * A . maps`` for maps ``(K, H, W)``; A is ``maf``'s affinity on the grid
    of the last stage feature."""
    grid = tuple(stage_features[-1].shape[-2:])
    fused = maf.fuse_features(stage_features, grid)
    small = F.adaptive_avg_pool2d(maps[None].float(), grid)
    propagated, _ = maf.propagate(fused, small)
    return (1.0 - weight) * maps + weight * resize_maps(propagated, tuple(maps.shape[-2:]))[0].to(maps.dtype)


def labels_on_cam_grid(labels: Tensor, grid: tuple[int, int]) -> Tensor:
    """``(H, W)`` labels with 255 -> ``(h * w,)`` uint8 on the CAM grid (nearest neighbour)."""
    return F.interpolate(labels[None, None].float(), size=grid, mode="nearest").flatten().to(torch.uint8)


def reteach_affinity(maf: MultilevelActivationFusion, labels: Sequence[Tensor],
                     stage_features: Callable[[int], list[Tensor]], steps: int = RETEACH_STEPS, batch: int = 8,
                     pixels: int = 1024, lr: float = 1e-3, seed: int = 0, cancel: Callable[[], bool] | None = None,
                     on_step: Callable[[int, int], None] | None = None) -> MultilevelActivationFusion | None:
    """A copy of ``maf`` taught by images drawn ``batch`` at a time (seeded): image i has the labels
    ``labels[i]`` (``labels_on_cam_grid``) and the MAF stage features ``stage_features(i)`` (each (1, C, h, w),
    the last one on the labels' grid). ``on_step(done, steps)`` after each step. None if cancelled or no image
    has two labelled pixels."""
    usable = [index for index, image_labels in enumerate(labels) if int((image_labels != UNSURE).sum()) >= 2]
    if not usable:
        return None
    taught = copy.deepcopy(maf).train()
    optimizer = torch.optim.Adam(taught.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    with torch.enable_grad():
        for step in range(1, steps + 1):
            if cancel is not None and cancel():
                return None
            optimizer.zero_grad()
            for pick in torch.randint(len(usable), (batch,), generator=generator).tolist():
                index = usable[pick]
                _sampled_loss(taught, stage_features(index), labels[index], pixels, generator).div(batch).backward()
            optimizer.step()
            if on_step is not None:
                on_step(step, steps)
    return taught.eval()


def _sampled_loss(maf: MultilevelActivationFusion, stage_features: list[Tensor], labels: Tensor, pixels: int,
                  generator: torch.Generator) -> Tensor:
    """The affinity loss on the pairs of up to ``pixels`` labelled pixels drawn from one image."""
    grid = tuple(stage_features[-1].shape[-2:])
    fused = maf.fuse_features(stage_features, grid)
    labelled = (labels != UNSURE).nonzero()[:, 0]
    picked = labelled[torch.randperm(len(labelled), generator=generator)[:pixels]].to(fused.device)
    return pair_affinity_loss(maf.similarity(fused, picked), labels.to(fused.device)[picked].long()[None])
