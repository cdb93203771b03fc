"""Mean absolute error of Eq 16: the LEM merged CAM against the original CAM.

Eq 16 pulls the LEM merged CAM towards the original CAM: L1 = mean |M_merge - M_MS|. During training
the "original multi-scale CAM" M_MS is the single-scale training CAM (multi-scale fusion, Eq 2, is an
inference step; Puzzle-CAM's reconstruction loss is the same single-scale L1). M_merge (Eq 5) sums
one merged CAM per grid and so sits on (number of grids) times the CAM's scale; we compare each
grid's merged CAM with the CAM and average over grids, which is Puzzle-CAM's reconstruction loss per
grid. Like Puzzle-CAM's "masking" option, only the image's tagged classes count (absent classes are
already driven to zero by Eq 14). MAF's theta/phi learn from ``oste_core.losses.affinity`` instead.

The fast mode (frozen backbone) sets its weight ``loss.w_mae`` to 0: there the 1x1 CAM
classifier is all this loss can move, and it lowered the CAM and the suggestion; with Eq 15 alone LEM lifts
the enhanced CAM and the suggestion (docs/BENCHMARKS.md).
"""
from __future__ import annotations

import torch
from torch import Tensor


def masked_l1(prediction: Tensor, target: Tensor, tags: Tensor) -> Tensor:
    """mean |prediction - target| over (B, K, h, w), counting only the tagged classes (tags (B, K))."""
    mask = tags.float()[:, :, None, None]
    return ((prediction.float() - target.float()).abs() * mask).mean()


def cam_consistency_loss(cam: Tensor, merged_cams: dict[int, Tensor], tags: Tensor) -> Tensor:
    """Eq 16: mean over LEM grids of the tag-masked L1 between each merged CAM and the CAM (0 without LEM)."""
    if not merged_cams:
        return cam.new_zeros((), dtype=torch.float32)
    return torch.stack([masked_l1(merged, cam, tags) for merged in merged_cams.values()]).mean()
