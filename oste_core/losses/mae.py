"""Mean absolute error terms of Eq 16 (and the MAF affinity's training signal).

Eq 16 pulls the LEM merged CAM towards the original CAM: L1 = mean |M_merge - M_MS|. During training
the "original multi-scale CAM" M_MS is the single-scale training CAM (multi-scale fusion, Eq 2, is an
inference step; Puzzle-CAM's reconstruction loss is the same single-scale L1). M_merge (Eq 5) sums
one merged CAM per grid and so sits on (number of grids) times the CAM's scale; we compare each
grid's merged CAM with the CAM and average over grids, which is Puzzle-CAM's reconstruction loss per
grid. Like Puzzle-CAM's "masking" option, only the image's tagged classes count (absent classes are
already driven to zero by Eq 14).

MAF term: none of Eqs 14-17 reaches theta/phi, so (as SEAM trains its PCM with an L1 equivariance
loss) the same L1 pulls the enhanced CAM towards the mean merged CAM (or towards the CAM when LEM is
off). That target is detached: this term trains the affinity, Eq 16 proper already ties the CAMs.
"""
from __future__ import annotations

import torch
from torch import Tensor


def masked_l1(prediction: Tensor, target: Tensor, tags: Tensor) -> Tensor:
    """mean |prediction - target| over (B, K, h, w), counting only the tagged classes (tags (B, K))."""
    mask = tags.float()[:, :, None, None]
    return ((prediction.float() - target.float()).abs() * mask).mean()


def cam_consistency_loss(cam: Tensor, merged_cams: dict[int, Tensor], tags: Tensor) -> Tensor:
    """Eq 16: mean over LEM grids of the tag-masked L1 between each merged CAM and the CAM."""
    if not merged_cams:
        return cam.new_zeros((), dtype=torch.float32)
    return torch.stack([masked_l1(merged, cam, tags) for merged in merged_cams.values()]).mean()


def maf_consistency_loss(enhanced_cam: Tensor, target: Tensor, tags: Tensor) -> Tensor:
    """The MAF term: tag-masked L1 between the enhanced CAM and a detached target CAM."""
    return masked_l1(enhanced_cam, target.detach(), tags)


def mae_loss(out: dict, tags: Tensor) -> Tensor:
    """Eq 16 plus, when MAF is on, the MAF term; zero when there is neither LEM nor MAF.

    ``out`` is ``OSTEModel.forward``'s dict; the MAF term is added when its "enhanced_by" is "maf".
    """
    merged_cams = out.get("merged_cams") or {}
    loss = cam_consistency_loss(out["cam"], merged_cams, tags)
    if out.get("enhanced_by") == "maf":
        target = torch.stack(list(merged_cams.values())).mean(dim=0) if merged_cams else out["cam"]
        loss = loss + maf_consistency_loss(out["enhanced_cam"], target, tags)
    return loss
