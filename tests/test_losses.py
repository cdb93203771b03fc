"""Losses of Eqs 14-22 on small real tensors."""
from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from oste_core.config import LossConfig
from oste_core.losses import (
    LOSS_KEYS,
    cam_consistency_loss,
    classification_loss,
    compute_losses,
    segmentation_loss,
    tile_classification_loss,
)

TAGS = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])


def test_classification_loss_is_the_multilabel_soft_margin() -> None:
    logits = torch.tensor([[2.0, -1.0, 0.5], [-3.0, 1.5, 0.0]])
    expected = -(TAGS * F.logsigmoid(logits) + (1 - TAGS) * F.logsigmoid(-logits)).mean()
    assert torch.allclose(classification_loss(logits, TAGS), expected, atol=1e-6)
    with pytest.raises(ValueError, match="same shape"):
        classification_loss(logits[:, :2], TAGS)


def test_tile_loss_scores_each_images_tiles_together_and_averages_grids() -> None:
    logits = torch.tensor([[2.0, -1.0, 0.5], [-3.0, 1.5, 0.0]])
    tiles = {2: logits.repeat_interleave(4, dim=0), 4: logits.repeat_interleave(16, dim=0)}
    assert torch.allclose(tile_classification_loss(tiles, TAGS), classification_loss(logits, TAGS), atol=1e-6)
    wrong = {2: -10 * (TAGS * 2 - 1).repeat_interleave(4, dim=0)}  # every tile confidently wrong
    right = {2: 10 * (TAGS * 2 - 1).repeat_interleave(4, dim=0)}
    both = {**right, 4: -10 * (TAGS * 2 - 1).repeat_interleave(16, dim=0)}
    assert tile_classification_loss(right, TAGS) < 1e-3 < tile_classification_loss(wrong, TAGS)
    assert torch.allclose(
        tile_classification_loss(both, TAGS), tile_classification_loss(wrong, TAGS) / 2, rtol=1e-3
    )
    assert tile_classification_loss({}, TAGS) == 0
    # an object that lies in one tile of four: that tile's strong score is enough (Puzzle-CAM pooling)
    one_tile = torch.full((TAGS.shape[0] * 4, TAGS.shape[1]), -10.0)
    one_tile[0::4] = 60 * (TAGS * 2 - 1)
    assert tile_classification_loss({2: one_tile}, TAGS) < 1e-3


def test_cam_consistency_is_tag_masked_l1_averaged_over_grids() -> None:
    cam = torch.zeros(2, 3, 4, 4)
    merged = {2: torch.ones(2, 3, 4, 4), 4: torch.full((2, 3, 4, 4), 3.0)}
    tagged_fraction = TAGS.mean()  # 3 of 6 image-class pairs are tagged
    expected = (1.0 + 3.0) / 2 * tagged_fraction
    assert torch.allclose(cam_consistency_loss(cam, merged, TAGS), expected)
    absent_only = torch.zeros(2, 3, 4, 4)
    absent_only[0, 1] = 5.0  # class 2 is not tagged in image 0: it does not count
    assert cam_consistency_loss(cam, {2: absent_only}, TAGS) == 0
    assert cam_consistency_loss(cam, {}, TAGS) == 0


def test_segmentation_loss_upsamples_and_ignores_255() -> None:
    labels = torch.tensor([[[0, 1], [2, 255]]]).repeat_interleave(2, dim=1).repeat_interleave(2, dim=2)
    confident = F.one_hot(labels.clamp(max=2), 3).permute(0, 3, 1, 2).float() * 20
    assert segmentation_loss(confident, labels) < 1e-6
    torch.manual_seed(0)
    logits = torch.randn(1, 3, 2, 2)  # half the label resolution
    upsampled = F.interpolate(logits, size=(4, 4), mode="bilinear", align_corners=False)
    expected = F.cross_entropy(upsampled, labels, ignore_index=255)
    assert torch.allclose(segmentation_loss(logits, labels), expected, atol=1e-6)


def test_segmentation_loss_without_labelled_pixels_is_zero_not_nan() -> None:
    logits = torch.randn(2, 3, 4, 4, requires_grad=True)
    loss = segmentation_loss(logits, torch.full((2, 8, 8), 255))
    assert loss == 0
    loss.backward()
    assert torch.isfinite(logits.grad).all()


def _out(lem: bool = True, maf: bool = True) -> dict:
    torch.manual_seed(0)
    cam = torch.rand(2, 3, 4, 4, requires_grad=True)
    out = {
        "logits": torch.randn(2, 3, requires_grad=True),
        "cam": cam,
        "enhanced_cam": torch.rand(2, 3, 4, 4, requires_grad=True) if maf else cam,
        "seg_logits": torch.randn(2, 4, 4, 4, requires_grad=True),
    }
    if maf:
        out["maf_similarity"] = (torch.rand(2, 16, 16) * 2 - 1).requires_grad_()
        out["maf_grid"] = (4, 4)
    if lem:
        out["tile_logits"] = {2: torch.randn(8, 3, requires_grad=True)}
        out["merged_cams"] = {2: torch.rand(2, 3, 4, 4, requires_grad=True)}
        out["merged_cam"] = out["merged_cams"][2]
    return out


def _batch(size: int = 16) -> tuple[dict, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    image = torch.zeros(2, 3, size, size, dtype=torch.uint8)
    image[:, :, :, size // 2:] = 200  # two flat colour regions
    valid = torch.ones(2, size, size, dtype=torch.bool)
    valid[:, size - 4:] = False
    pseudo = torch.randint(0, 4, (2, size, size), generator=generator)
    return {"tags": TAGS, "image_uint8": image, "valid": valid}, pseudo


def test_compute_losses_returns_every_term_and_their_weighted_sum() -> None:
    out = _out()
    batch, pseudo = _batch()
    cfg = LossConfig(w_cls=1.0, w_tile=0.5, w_mae=2.0, w_affinity=3.0, w_seg=1.5, w_energy=0.25)
    losses = compute_losses(out, batch, pseudo, cfg, iteration=0)
    assert set(losses) == set(LOSS_KEYS)
    assert all(value.dim() == 0 and torch.isfinite(value) for value in losses.values())
    assert all(losses[key] > 0 for key in ("cls", "tile", "mae", "affinity", "seg", "energy"))
    expected = (losses["cls"] + 0.5 * losses["tile"] + 2.0 * losses["mae"] + 3.0 * losses["affinity"]
                + 1.5 * losses["seg"] + 0.25 * losses["energy"])
    assert torch.allclose(losses["total"], expected)
    losses["total"].backward()
    assert all(out[key].grad is not None for key in ("logits", "cam", "seg_logits", "maf_similarity"))


def test_compute_losses_ignores_pixels_outside_valid() -> None:
    out = _out()
    batch, pseudo = _batch()
    other = pseudo.clone()
    other[~batch["valid"]] = (pseudo[~batch["valid"]] + 1) % 4  # different labels only on padding
    cfg = LossConfig()
    first = compute_losses(out, batch, pseudo, cfg, 0)["seg"]
    assert torch.allclose(first, compute_losses(out, batch, other, cfg, 0)["seg"])


def test_switched_off_terms_are_zero() -> None:
    batch, pseudo = _batch()
    baseline = compute_losses(_out(lem=False, maf=False), batch, pseudo, LossConfig(), 0)
    assert baseline["tile"] == 0 and baseline["mae"] == 0 and baseline["affinity"] == 0
    assert baseline["cls"] > 0 and baseline["seg"] > 0
    no_energy = compute_losses(_out(), batch, pseudo, dataclasses.replace(LossConfig(), w_energy=0.0), 0)
    assert no_energy["energy"] == 0


def test_segmentation_losses_wait_for_the_warmup_but_keep_the_head_in_the_graph() -> None:
    out = _out()
    batch, pseudo = _batch()
    cfg = dataclasses.replace(LossConfig(), seg_warmup_iters=10)
    warming = compute_losses(out, batch, pseudo, cfg, iteration=9)
    assert warming["seg"] == 0 and warming["energy"] == 0 and warming["affinity"] == 0
    warming["total"].backward()
    assert out["seg_logits"].grad is not None and out["seg_logits"].grad.eq(0).all()  # DDP still sees the head
    assert out["maf_similarity"].grad is not None
    assert compute_losses(_out(), batch, pseudo, cfg, iteration=10)["seg"] > 0
