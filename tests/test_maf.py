"""Multilevel Activation Fusion (Eqs 6-8): affinity properties, propagation, scale and its training signal."""
from __future__ import annotations

import torch

from oste_core.losses.affinity import affinity_loss, labels_on_grid
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
    enhanced, _ = maf(_stage_features(), cam)
    assert torch.allclose(enhanced, cam, atol=1e-4)
    merged = [cam * 3.0, cam * 5.0]  # merged CAMs (LEM) are averaged, propagated, then averaged with the CAM
    assert torch.allclose(maf(_stage_features(), cam, merged)[0], cam * (1 + 4) / 2, atol=1e-4)


def test_large_maps_use_a_downsampled_affinity_and_keep_their_size() -> None:
    maf = _maf(max_pixels=64)
    cam = torch.full((1, 2, 20, 16), 1.5)
    enhanced, similarity = maf(_stage_features(batch=1, size=20), cam)
    assert enhanced.shape == cam.shape
    assert torch.allclose(enhanced, cam, atol=1e-4)
    grid = maf.affinity_grid((20, 16))
    assert grid[0] * grid[1] <= 64 and similarity.shape == (1, grid[0] * grid[1], grid[0] * grid[1])


def test_enhanced_cam_stays_on_the_cam_scale_and_non_negative() -> None:
    maf = _maf()
    cam = torch.rand(2, 3, 6, 6) * 10
    enhanced, _ = maf(_stage_features(), cam)
    assert (enhanced >= 0).all()
    assert enhanced.max() <= cam.max() + 1e-4  # average of the CAM and a convex combination of its values


def test_power_sharpens_and_an_empty_affinity_row_keeps_the_pixels_own_value() -> None:
    similarity = torch.tensor([[[1.0, 0.5, 0.0], [-0.2, -0.3, -0.1], [0.0, 0.0, 1.0]]])
    aff = _maf().normalise(similarity)
    assert torch.allclose(aff[0, 1], torch.tensor([0.0, 1.0, 0.0]))
    assert torch.allclose(aff[0, 0], torch.tensor([2 / 3, 1 / 3, 0.0]), atol=1e-4)
    sharp = _maf(power=2.0).normalise(similarity)  # PSA's beta: weak similarities count less
    assert torch.allclose(sharp[0, 0], torch.tensor([0.8, 0.2, 0.0]), atol=1e-4)
    assert torch.allclose(sharp[0, 1], aff[0, 1])


def test_features_stay_detached_by_default() -> None:
    maf = _maf()
    features = [f.requires_grad_() for f in _stage_features()]
    enhanced, similarity = maf(features, torch.rand(2, 3, 6, 6), [torch.rand(2, 3, 6, 6)])
    (enhanced.sum() + similarity.sum()).backward()
    assert all(f.grad is None for f in features)  # SEAM's PCM: the affinity cannot distort them
    assert all(getattr(maf, name).weight.grad.abs().sum() > 0 for name in ("theta", "phi"))


def test_features_receive_gradients_when_not_detached() -> None:
    maf = _maf(detach_features=False)
    features = [f.requires_grad_() for f in _stage_features()]
    maf(features, torch.rand(2, 3, 6, 6))[0].sum().backward()
    assert all(f.grad is not None and f.grad.abs().sum() > 0 for f in features)


def test_bf16_autocast_keeps_the_affinity_in_float32() -> None:
    maf = _maf()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        fused = maf.fuse_features(_stage_features(), (6, 6))
        aff = maf.affinity(fused)
        enhanced, similarity = maf(_stage_features(), torch.rand(2, 3, 6, 6))
    assert aff.dtype == similarity.dtype == enhanced.dtype == torch.float32
    assert torch.allclose(aff.sum(dim=2), torch.ones(2, 36), atol=1e-3)


def _two_region_labels(size: int = 6) -> torch.Tensor:
    """(2, 2*size, 2*size) labels at twice the grid: left half background, right half class 1, a 255 row."""
    labels = torch.zeros(2, 2 * size, 2 * size, dtype=torch.long)
    labels[:, :, size:] = 1
    labels[:, :2] = 255
    return labels


def test_labels_on_grid_resize_by_nearest_neighbour_and_keep_unsure() -> None:
    flat = labels_on_grid(_two_region_labels(), (6, 6)).view(2, 6, 6)
    assert (flat[:, 0] == 255).all() and (flat[:, 1:, :3] == 0).all() and (flat[:, 1:, 3:] == 1).all()


def test_affinity_loss_is_zero_for_the_ideal_similarity_and_ignores_unsure_pixels() -> None:
    flat = labels_on_grid(_two_region_labels(), (6, 6))
    ideal = (flat[:, :, None] == flat[:, None, :]).float() * 2 - 1  # 1 within a class, -1 across
    assert affinity_loss(ideal, _two_region_labels(), (6, 6)) == 0
    unsure = (flat == 255)[:, :, None] | (flat == 255)[:, None, :]
    assert affinity_loss(ideal.masked_fill(unsure, 0.3), _two_region_labels(), (6, 6)) == 0
    assert affinity_loss(torch.zeros(2, 36, 36), _two_region_labels(), (6, 6)) == 1  # pull 1, push 0
    assert affinity_loss(torch.ones(2, 36, 36), _two_region_labels(), (6, 6)) == 1  # pull 0, push 1


def test_training_on_the_affinity_loss_separates_two_regions() -> None:
    """theta/phi learn from pseudo-labels which pixels belong together: A stops mixing the two regions."""
    maf = _maf()
    torch.manual_seed(1)
    side = torch.zeros(1, 1, 6, 6)
    side[..., 3:] = 1  # the right half is the object
    features = _stage_features()
    for index in (1, 2):  # stages 4-5 (at the CAM grid) carry a region signal under their noise
        features[index] = features[index] + side * torch.randn(1, features[index].shape[1], 1, 1)
    labels = _two_region_labels()

    @torch.no_grad()
    def cross_mass() -> float:  # share of each row's affinity that goes to the other region
        aff = maf.affinity(maf.fuse_features(features, (6, 6)))
        right = side.flatten().bool()
        return float((aff[:, right][:, :, ~right].sum() + aff[:, ~right][:, :, right].sum()) / aff.sum())

    before = cross_mass()
    optimizer = torch.optim.Adam(maf.parameters(), lr=0.02)
    for _ in range(60):
        optimizer.zero_grad()
        loss = affinity_loss(maf.similarity(maf.fuse_features(features, (6, 6))), labels, (6, 6))
        loss.backward()
        optimizer.step()
    assert cross_mass() < 0.05 < before
