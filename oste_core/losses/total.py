"""Total loss (Eq 22): L = w_cls L_cls + w_tile L_tile + w_mae L_mae + w_seg L_seg + w_energy L_energy
(+ w_affinity L_aff, MAF's affinity loss, see ``affinity``).

Eq 14 (image classification), Eq 15 (LEM tile classification), Eq 16 (merged CAM vs CAM), Eq 17
(pseudo-label cross-entropy) and Eqs 18-21 (energy loss of the segmentation probabilities, in
``oste_core.losses.energy``). The weights come from ``LossConfig``. For the first ``seg_warmup_iters``
iterations the losses that learn from pseudo-labels (segmentation, energy, affinity) are off; they
are then 0 * (sum of their inputs), which keeps the heads in the autograd graph so DDP sees no unused
parameters.
"""
from __future__ import annotations

import torch
from torch import Tensor

from oste_core.config import LossConfig
from oste_core.labels import UNSURE

from .affinity import affinity_loss
from .classification import classification_loss, tile_classification_loss
from .energy import energy_loss
from .mae import cam_consistency_loss
from .seg import segmentation_loss

LOSS_KEYS = ("cls", "tile", "mae", "affinity", "seg", "energy", "total")


def compute_losses(out: dict, batch: dict, pseudo: Tensor, cfg: LossConfig, iteration: int) -> dict[str, Tensor]:
    """All terms of Eq 22 for one training step; switched-off terms are zero tensors.

    ``out`` is ``OSTEModel.forward``'s dict; ``batch`` has "tags" (B, K) multi-hot, "image_uint8"
    (B, 3, H, W) uint8 and "valid" (B, H, W) bool; ``pseudo`` (B, H, W) long holds the pseudo-labels
    (verified masks already substituted) with 255 = ignore. Pixels outside ``valid`` are ignored too.
    """
    seg_logits = out["seg_logits"]
    device = seg_logits.device
    valid = batch["valid"].to(device).bool()
    losses = classification_losses(out, batch["tags"].to(device).float())
    zero = torch.zeros((), device=device)
    similarity = out.get("maf_similarity")
    learning = iteration >= cfg.seg_warmup_iters  # the pseudo-label losses are on
    labels = pseudo.to(device).long().masked_fill(~valid, UNSURE)
    if similarity is None:
        losses["affinity"] = zero
    elif learning and cfg.w_affinity > 0:
        losses["affinity"] = affinity_loss(similarity, labels, out["maf_grid"])
    else:
        losses["affinity"] = similarity.float().sum() * 0.0  # keeps theta/phi in the graph (DDP)
    if learning:
        losses["seg"] = segmentation_loss(seg_logits, labels)
        losses["energy"] = zero
        if cfg.w_energy > 0:
            losses["energy"] = energy_loss(
                torch.softmax(seg_logits.float(), dim=1),
                batch["image_uint8"].to(device),
                valid,
                cfg.sigma_rgb,
                cfg.sigma_xy,
                cfg.energy_scale,
                cfg.energy_chunk,
            )
    else:
        losses["seg"] = seg_logits.float().sum() * 0.0
        losses["energy"] = zero
    return _with_total(losses, cfg)


def classification_losses(out: dict, tags: Tensor) -> dict[str, Tensor]:
    """Eqs 14-16 (image and tile classification, merged-CAM consistency): the terms that need no pseudo-label."""
    return {
        "cls": classification_loss(out["logits"], tags),
        "tile": tile_classification_loss(out.get("tile_logits") or {}, tags),
        "mae": cam_consistency_loss(out["cam"], out.get("merged_cams") or {}, tags),
    }


def warmup_losses(out: dict, tags: Tensor, cfg: LossConfig) -> dict[str, Tensor]:
    """The losses of a classification-only warm-up step (``OSTEModel.forward_features(classify_only=True)``):
    Eqs 14-16, the pseudo-label terms zero."""
    losses = classification_losses(out, tags.float())
    zero = torch.zeros((), device=tags.device)
    losses.update(affinity=zero, seg=zero, energy=zero)
    return _with_total(losses, cfg)


def _with_total(losses: dict[str, Tensor], cfg: LossConfig) -> dict[str, Tensor]:
    """Eq 22: the weighted sum as "total"."""
    weights = {"cls": cfg.w_cls, "tile": cfg.w_tile, "mae": cfg.w_mae, "affinity": cfg.w_affinity,
               "seg": cfg.w_seg, "energy": cfg.w_energy}
    losses["total"] = sum(weights[key] * losses[key] for key in weights)
    return losses
