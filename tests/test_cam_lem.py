"""CAM head (Eq 1), multi-scale + flip fusion (Eq 2) and the Location Expansion Module (Eqs 3-5)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from oste_core.models.modules.cam import CAMHead, multiscale_flip_sum
from oste_core.models.modules.lem import location_expansion, pad_to_multiple, split_into_tiles, stitch_tiles


def test_cam_head_logits_are_gap_of_class_map_and_cam_is_its_relu() -> None:
    torch.manual_seed(0)
    head = CAMHead(in_channels=6, num_classes=3)
    features = torch.randn(2, 6, 5, 7)
    logits, cam = head(features)
    weight = head.classifier.weight[:, :, 0, 0]
    class_map = torch.einsum("kc,bchw->bkhw", weight, features)
    assert torch.allclose(logits, features.mean(dim=(2, 3)) @ weight.T, atol=1e-5)
    assert torch.allclose(cam, class_map.clamp(min=0), atol=1e-5)
    assert (cam >= 0).all() and (cam > 0).any()


def test_multiscale_flip_sum_adds_every_scale_and_unflips_the_mirror() -> None:
    image = torch.arange(2 * 4 * 6, dtype=torch.float32).reshape(1, 2, 4, 6)
    seen_sizes = []

    def predict(batch: torch.Tensor) -> dict[str, torch.Tensor]:
        seen_sizes.append(tuple(batch.shape))
        return {"same": batch}

    fused = multiscale_flip_sum(predict, image, scales=(1.0,), flip=True)
    assert torch.equal(fused["same"], 2 * image[0])  # the mirror is flipped back before the sum

    constant = torch.full((1, 1, 8, 8), 3.0)
    fused = multiscale_flip_sum(lambda b: {"c": b}, constant, scales=(0.5, 1.0, 2.0), flip=True)
    assert fused["c"].shape == (1, 8, 8)
    assert torch.allclose(fused["c"], torch.full((1, 8, 8), 3.0 * 6))
    assert seen_sizes == [(2, 2, 4, 6)]


def test_multiscale_flip_sum_rejects_a_batch() -> None:
    with pytest.raises(ValueError, match="one image"):
        multiscale_flip_sum(lambda b: {"x": b}, torch.zeros(2, 3, 8, 8))


def test_split_and_stitch_put_each_tile_where_it_belongs() -> None:
    n, batch, tile_h, tile_w = 3, 2, 2, 4
    tiles = torch.arange(batch * n * n, dtype=torch.float32).view(-1, 1, 1, 1).expand(-1, 1, tile_h, tile_w)
    stitched = stitch_tiles(tiles, n)
    assert stitched.shape == (batch, 1, n * tile_h, n * tile_w)
    for b in range(batch):
        for row in range(n):
            for col in range(n):
                block = stitched[b, 0, row * tile_h:(row + 1) * tile_h, col * tile_w:(col + 1) * tile_w]
                assert (block == b * n * n + row * n + col).all()


def test_split_and_stitch_are_exact_inverses() -> None:
    torch.manual_seed(0)
    images = torch.randn(2, 3, 12, 8)
    for n in (1, 2, 4):
        tiles = split_into_tiles(images, n)
        assert tiles.shape == (2 * n * n, 3, 12 // n, 8 // n)
        assert torch.equal(stitch_tiles(tiles, n), images)
        assert torch.equal(split_into_tiles(stitch_tiles(tiles, n), n), tiles)
    assert torch.equal(split_into_tiles(images, 2)[1], images[0, :, :6, 4:])  # image 0, row 0, column 1


def test_split_rejects_sizes_that_do_not_divide() -> None:
    with pytest.raises(ValueError, match="not divisible"):
        split_into_tiles(torch.zeros(1, 3, 10, 8), 4)


def test_pad_to_multiple_pads_bottom_right_with_zeros() -> None:
    padded = pad_to_multiple(torch.ones(1, 1, 5, 8), 4)
    assert padded.shape == (1, 1, 8, 8)
    assert padded[..., :5, :].eq(1).all() and padded[..., 5:, :].eq(0).all()


def _avg_pool_classifier(stride: int):
    """A real 'network' whose CAM is the stride-pooled image: stitched tiles must rebuild the whole-image CAM."""

    def classify(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        cam = F.avg_pool2d(images, stride, ceil_mode=True)
        return cam.mean(dim=(2, 3)), cam

    return classify


@pytest.mark.parametrize("size", [(40, 40), (36, 28), (32, 64)])
def test_location_expansion_rebuilds_the_full_cam_and_crops_padding(size: tuple[int, int]) -> None:
    torch.manual_seed(0)
    stride = 4
    images = torch.rand(2, 3, *size) + 1.0  # positive, so zero padding would show if it leaked in
    classify = _avg_pool_classifier(stride)
    full_cam = classify(images)[1]
    tile_logits, merged = location_expansion(images, classify, (2, 3), tuple(full_cam.shape[-2:]), stride)
    assert set(tile_logits) == set(merged) == {2, 3}
    for n in (2, 3):
        assert tile_logits[n].shape == (2 * n * n, 3)
        assert merged[n].shape == full_cam.shape
        assert torch.allclose(merged[n], full_cam, atol=1e-6)


def test_location_expansion_tile_logits_follow_tile_order() -> None:
    stride, n = 2, 2
    images = torch.zeros(1, 1, 8, 8)
    images[..., 4:, :4] = 1.0  # only the bottom-left tile (row 1, column 0 -> index 2) is lit
    tile_logits, _ = location_expansion(images, _avg_pool_classifier(stride), (n,), (4, 4), stride)
    assert tile_logits[n].flatten().tolist() == [0.0, 0.0, 1.0, 0.0]


def test_location_expansion_with_no_grids_is_off() -> None:
    tile_logits, merged = location_expansion(torch.zeros(1, 3, 16, 16), _avg_pool_classifier(4), (), (4, 4), 4)
    assert tile_logits == {} and merged == {}


def test_location_expansion_keeps_channels_last() -> None:
    images = torch.rand(1, 3, 16, 16).contiguous(memory_format=torch.channels_last)
    formats = []

    def classify(tiles: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        formats.append(tiles.is_contiguous(memory_format=torch.channels_last))
        return _avg_pool_classifier(4)(tiles)

    location_expansion(images, classify, (2,), (4, 4), 4)
    assert formats == [True]
