"""Classification losses: the image (Eq 14) and the LEM tiles (Eq 15).

Eq 14 is the multi-label soft-margin loss between the image tags y and the GAP logits.
Eq 15 is the same loss on the tiles of each LEM grid (L_1/2, L_1/4), averaged over the grids. A single
tile often misses a tagged object, so labelling each tile with its image's tags gives contradictory
targets (we measured the tile loss stuck at log 2 on the demo data). As Puzzle-CAM does, the tiles of
one image are scored together: the mean of its n*n tile logits (= the global average of the stitched
tile class map, since tiles are equal) is classified against the image's tags. Every tile still gets
its own gradient, which is what pushes the classifier to find weaker object parts.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def classification_loss(logits: Tensor, tags: Tensor) -> Tensor:
    """Eq 14: multi-label soft margin between logits (B, K) and multi-hot tags (B, K)."""
    if logits.shape != tags.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and tags {tuple(tags.shape)} must have the same shape")
    return F.multilabel_soft_margin_loss(logits.float(), tags.float())


def tile_classification_loss(tile_logits: dict[int, Tensor], tags: Tensor) -> Tensor:
    """Eq 15: mean over grids n of Eq 14 on each image's mean tile logits ((B*n*n, K) -> (B, K))."""
    if not tile_logits:
        return tags.new_zeros((), dtype=torch.float32)
    losses = [
        classification_loss(logits.reshape(tags.shape[0], n * n, -1).mean(dim=1), tags)
        for n, logits in tile_logits.items()
    ]
    return torch.stack(losses).mean()
