"""MAF re-taught on the mixed maps' pseudo-labels and applied to the suggestion's maps (maf_refinement.py)."""
from __future__ import annotations

import torch

from oste_core.labels import UNSURE
from oste_core.losses.affinity import affinity_loss, pair_affinity_loss
from oste_core.models.modules.maf import MultilevelActivationFusion
from oste_core.models.modules.maf_refinement import labels_on_cam_grid, refine_maps, reteach_affinity

STAGE_CHANNELS = (4, 6, 8)
GRID = (6, 8)


def _two_region_image(seed: int) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Stage features whose left half (label 1) and right half (label 0) differ in one channel, plus noise;
    the right-most column is unsure."""
    generator = torch.Generator().manual_seed(seed)
    sizes = ((2 * GRID[0], 2 * GRID[1]), GRID, GRID)
    stages = []
    for channels, (height, width) in zip(STAGE_CHANNELS, sizes):
        features = torch.randn(1, channels, height, width, generator=generator)
        features[:, 0, :, : width // 2] += 3.0
        stages.append(features)
    labels = torch.zeros(GRID, dtype=torch.uint8)
    labels[:, : GRID[1] // 2] = 1
    labels[:, -1] = UNSURE
    return stages, labels.flatten()


def _maf() -> MultilevelActivationFusion:
    torch.manual_seed(0)
    return MultilevelActivationFusion(STAGE_CHANNELS, dim=8, power=8.0).eval()


def test_pair_loss_is_the_affinity_loss_on_every_grid_pixel() -> None:
    similarity = torch.rand(2, 12, 12) * 2 - 1
    labels = torch.randint(0, 3, (2, 3, 4))
    labels[0, 0, 0] = UNSURE
    expected = affinity_loss(similarity, labels, (3, 4))
    assert torch.allclose(pair_affinity_loss(similarity, labels.flatten(1)), expected)


def test_reteaching_separates_the_labelled_regions_and_leaves_the_trained_maf_alone() -> None:
    images = [_two_region_image(seed) for seed in range(4)]
    maf = _maf()
    before = {name: value.clone() for name, value in maf.state_dict().items()}
    taught = reteach_affinity(maf, [labels for _, labels in images], lambda index: images[index][0], steps=60,
                              batch=2, pixels=32, lr=1e-2)
    assert all(torch.equal(value, before[name]) for name, value in maf.state_dict().items())
    stages, labels = _two_region_image(9)  # an image it did not see
    known = labels != UNSURE
    same = (labels[:, None] == labels[None, :]) & known[:, None] & known[None, :]
    other = (labels[:, None] != labels[None, :]) & known[:, None] & known[None, :]

    def separation(module: MultilevelActivationFusion) -> float:
        with torch.no_grad():
            similarity = module.similarity(module.fuse_features(stages, GRID))[0]
        return float(similarity[same].mean() - similarity[other].mean())

    assert separation(taught) > separation(maf) + 0.2
    assert separation(taught) > 0.8


def test_reteaching_gives_up_when_cancelled_or_without_labels() -> None:
    images = [_two_region_image(seed) for seed in range(2)]
    features = lambda index: images[index][0]  # noqa: E731
    assert reteach_affinity(_maf(), [labels for _, labels in images], features, cancel=lambda: True) is None
    unsure = [torch.full_like(labels, UNSURE) for _, labels in images]
    assert reteach_affinity(_maf(), unsure, features) is None


def test_refine_maps_averages_the_maps_with_their_propagation() -> None:
    stages, _ = _two_region_image(0)
    maps = torch.rand(2, 24, 32)
    assert torch.equal(refine_maps(_maf(), stages, maps, 0.0), maps)
    refined = refine_maps(_maf(), stages, maps, 0.5)
    assert refined.shape == maps.shape and not torch.allclose(refined, maps)
    # A's rows sum to one: a constant map stays constant
    flat = refine_maps(_maf(), stages, torch.full((1, 24, 32), 0.7), 1.0)
    assert torch.allclose(flat, torch.full_like(flat, 0.7), atol=1e-4)


def test_labels_on_cam_grid_keep_unsure() -> None:
    labels = torch.full((12, 16), UNSURE, dtype=torch.long)
    labels[:, :8] = 2
    grid = labels_on_cam_grid(labels, GRID).view(GRID)
    assert grid.dtype == torch.uint8 and set(grid[:, :4].unique().tolist()) == {2}
    assert set(grid[:, 4:].unique().tolist()) == {UNSURE}
