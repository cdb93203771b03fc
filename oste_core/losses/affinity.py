"""Affinity loss: teaches MAF's pixel similarity (Eq 7) which pixels belong together.

None of Eqs 14-22 reaches MAF's theta/phi, so we train them the way AFA (Ru et al., CVPR 2022, the
paper's ref 7) learns affinity from attention: the current pseudo-labels
(FBE's, verified masks substituted), resized to the affinity grid by nearest neighbour, say which
pixel pairs share a class (positive pairs) and which do not (negative pairs); pixels labelled 255
(unsure, padding) make no pair. Positive pairs are pulled towards cosine similarity 1, negative pairs
below 0 (where MAF's ReLU zeroes them):

    L_aff = (mean_{pos, bg} (1 - s_ij) + mean_{pos, fg} (1 - s_ij)) / 2 + mean_{neg} max(s_ij, 0)

Background and foreground positives are averaged separately (as AFA does) because background pairs
far outnumber foreground ones. An empty set contributes 0.
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from oste_core.labels import UNSURE


def labels_on_grid(labels: Tensor, grid: tuple[int, int]) -> Tensor:
    """(B, H, W) labels -> (B, h*w) by nearest-neighbour resizing to ``grid`` (255 stays 255)."""
    resized = F.interpolate(labels[:, None].float(), size=tuple(grid), mode="nearest")
    return resized.flatten(1).long()


def _masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    return (values * mask).sum() / mask.sum().clamp(min=1)


def affinity_loss(similarity: Tensor, labels: Tensor, grid: tuple[int, int]) -> Tensor:
    """L_aff of similarity (B, N, N) (N = grid's pixels) against labels (B, H, W) long with 255."""
    flat = labels_on_grid(labels, grid)
    if flat.shape[1] != similarity.shape[-1]:
        raise ValueError(f"grid {tuple(grid)} does not match a similarity of {similarity.shape[-1]} pixels")
    return pair_affinity_loss(similarity, flat)


def pair_affinity_loss(similarity: Tensor, flat_labels: Tensor) -> Tensor:
    """L_aff of similarity (B, N, N) between N pixels against their labels (B, N) long with 255."""
    known = flat_labels != UNSURE
    pair_known = known[:, :, None] & known[:, None, :]
    same = (flat_labels[:, :, None] == flat_labels[:, None, :]) & pair_known
    background = (flat_labels == 0)[:, :, None]
    similarity = similarity.float()
    pull = 1 - similarity
    positive = (_masked_mean(pull, same & background) + _masked_mean(pull, same & ~background)) / 2
    negative = _masked_mean(F.relu(similarity), pair_known & ~same)
    return positive + negative
