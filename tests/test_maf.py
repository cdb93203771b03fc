"""Multilevel Activation Fusion (Eqs 6-8): affinity properties, propagation, scale and its training signal."""
from __future__ import annotations

import torch

from oste_core.losses.mae import maf_consistency_loss
from oste_core.models.modules.maf import MultilevelActivationFusion

STAGE_CHANNELS = (8, 12, 16)


def _stage_features(batch: int = 2, size: int = 6) -> list[torch.Tensor]:
    # stage 3 at twice the CAM resolution, stages 4-5 at it, like a backbone at output stride 8
    sizes = (2 * size, size, size)
    return [torch.randn(batch, c, s, s) for c, s in zip(STAGE_CHANNELS, sizes)]


def _maf(**kwargs) -> MultilevelActivationFusion:
    torch.manual_seed(0)
    return MultilevelActivationFusion(STAGE_CHANNELS, dim=8, **kwargs)


def test_affinity_is_non_negative_with_rows_summing_to_one() -> None:
    maf = _maf()
    fused = maf.fuse_features(_stage_features(), (6, 6))
    assert fused.shape == (2, 3 * 8, 6, 6)
    aff = maf.affinity(fused)
    assert aff.shape == (2, 36, 36) and aff.dtype == torch.float32
    assert (aff >= 0).all()
    assert torch.allclose(aff.sum(dim=2), torch.ones(2, 36), atol=1e-4)
    assert (aff < 1).any()  # not the identity: pixels do share activation


def test_affinity_stays_non_negative_and_normalised_once_theta_and_phi_differ() -> None:
    maf = _maf()
    with torch.no_grad():
        maf.phi.weight.add_(torch.randn_like(maf.phi.weight))
    aff = maf.affinity(maf.fuse_features(_stage_features(), (6, 6)))
    row_sums = aff.sum(dim=2)
    assert (aff >= 0).all()
    assert torch.allclose(row_sums[row_sums > 0], torch.ones_like(row_sums[row_sums > 0]), atol=1e-4)


def test_a_spatially_constant_cam_stays_constant() -> None:
    maf = _maf()
    cam = torch.tensor([0.5, 2.0, 0.0]).view(1, 3, 1, 1).expand(2, 3, 6, 6)
    enhanced = maf(_stage_features(), cam)
    assert torch.allclose(enhanced, cam, atol=1e-4)
    merged = [cam * 3.0, cam * 5.0]  # merged CAMs (LEM) are averaged, propagated, then averaged with the CAM
    assert torch.allclose(maf(_stage_features(), cam, merged), cam * (1 + 4) / 2, atol=1e-4)


def test_large_maps_use_a_downsampled_affinity_and_keep_their_size() -> None:
    maf = _maf(max_pixels=64)
    cam = torch.full((1, 2, 20, 16), 1.5)
    enhanced = maf(_stage_features(batch=1, size=20), cam)
    assert enhanced.shape == cam.shape
    assert torch.allclose(enhanced, cam, atol=1e-4)


def test_enhanced_cam_stays_on_the_cam_scale_and_non_negative() -> None:
    maf = _maf()
    cam = torch.rand(2, 3, 6, 6) * 10
    enhanced = maf(_stage_features(), cam)
    assert (enhanced >= 0).all()
    assert enhanced.max() <= cam.max() + 1e-4  # average of the CAM and a convex combination of its values


def test_theta_and_phi_learn_from_the_maf_term_and_features_stay_detached() -> None:
    maf = _maf()
    features = [f.requires_grad_() for f in _stage_features()]
    cam = torch.rand(2, 3, 6, 6, requires_grad=True)
    merged = [torch.rand(2, 3, 6, 6) * 2]
    tags = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    maf_consistency_loss(maf(features, cam, merged), merged[0], tags).backward()
    for name in ("theta", "phi"):
        grad = getattr(maf, name).weight.grad
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0
    assert all(f.grad is None for f in features)  # detach_features (SEAM's PCM): the affinity cannot distort them
    assert cam.grad is not None and cam.grad.abs().sum() > 0


def test_features_receive_gradients_when_not_detached() -> None:
    maf = _maf(detach_features=False)
    features = [f.requires_grad_() for f in _stage_features()]
    maf(features, torch.rand(2, 3, 6, 6)).sum().backward()
    assert all(f.grad is not None and f.grad.abs().sum() > 0 for f in features)


def test_bf16_autocast_keeps_the_affinity_in_float32() -> None:
    maf = _maf()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        fused = maf.fuse_features(_stage_features(), (6, 6))
        aff = maf.affinity(fused)
        enhanced = maf(_stage_features(), torch.rand(2, 3, 6, 6))
    assert aff.dtype == torch.float32 and enhanced.dtype == torch.float32
    assert torch.allclose(aff.sum(dim=2), torch.ones(2, 36), atol=1e-3)
