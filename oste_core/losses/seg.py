"""Segmentation cross-entropy on the pseudo-labels (Eq 17).

Eq 17: -1/|S| sum_i sum_k B_k(i) log P_k(i), where B_k(i) = 1 if the pseudo-label of pixel i is class k.
The (B, K+1, h, w) logits are bilinearly upsampled to the label size; pixels labelled 255 (FBE's
unsure pixels, padding) are ignored, and a batch without any labelled pixel gives 0 (not NaN).
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from oste_core.labels import UNSURE



def segmentation_loss(seg_logits: Tensor, labels: Tensor) -> Tensor:
    """Eq 17: mean pixel cross-entropy of seg_logits (B, K+1, h, w) against labels (B, H, W) long with 255."""
    if labels.dim() != 3 or labels.shape[0] != seg_logits.shape[0]:
        raise ValueError(f"labels must be (B, H, W) for logits {tuple(seg_logits.shape)}, got {tuple(labels.shape)}")
    logits = F.interpolate(seg_logits.float(), size=labels.shape[-2:], mode="bilinear", align_corners=False)
    total = F.cross_entropy(logits, labels.long(), ignore_index=UNSURE, reduction="sum")
    count = (labels != UNSURE).sum().clamp(min=1)
    return total / count
