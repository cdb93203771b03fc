"""FBE pseudo-labels (Eqs 9-13) and the two dense-CRF backends."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from oste_core.config import ModelConfig
from oste_core.models.modules.crf import PydenseCRF, TorchDenseCRF, make_crf, pydensecrf_available
from oste_core.labels import UNSURE as IGNORE
from oste_core.models.modules.fbe import fbe_scores, make_pseudo_labels

BACKENDS = ["torch", pytest.param("pydensecrf", marks=pytest.mark.skipif(
    not pydensecrf_available(), reason="pydensecrf is not installed"))]
SIZE = 48


def object_scene(batch: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """A bright square object (rows/cols 14..33) on a dark background, and a CAM of class 2 (of K=3) on it.

    The CAM is the object mask pooled to 1/4 resolution (a backbone's), so its edges are soft once upsampled.
    """
    images = torch.full((batch, 3, SIZE, SIZE), 30, dtype=torch.uint8)
    images[:, :, 14:34, 14:34] = torch.tensor([220, 180, 40], dtype=torch.uint8)[:, None, None]
    mask = torch.zeros(1, 1, SIZE, SIZE)
    mask[..., 14:34, 14:34] = 1.0
    cams = torch.zeros(batch, 3, 12, 12)
    cams[:, 1] = 5.0 * F.avg_pool2d(mask, 4)[0, 0]
    return images, cams


def tags_for(*classes: int, batch: int = 1, num_classes: int = 3) -> torch.Tensor:
    tags = torch.zeros(batch, num_classes)
    for k in classes:
        tags[:, k - 1] = 1.0
    return tags


@pytest.mark.parametrize("backend", BACKENDS)
def test_fbe_keeps_confident_object_and_background_and_marks_the_rest_unsure(backend):
    images, cams = object_scene()
    cfg = ModelConfig(crf_backend=backend, crf_iters=5)
    label = make_pseudo_labels(cams, images, tags_for(2), cfg, make_crf(backend, iters=5))[0]
    assert label.shape == (SIZE, SIZE) and label.dtype == torch.long
    assert set(label.unique().tolist()) == {0, 2, IGNORE}
    assert (label[20:28, 20:28] == 2).all()  # object core
    assert (label[:6] == 0).all() and (label[:, :6] == 0).all()  # far background
    assert (label[14:34, 14:34] == 0).sum() == 0  # no object pixel is called background
    unsure = (label == IGNORE).float().mean().item()
    assert 0.05 < unsure < 0.6


def test_untagged_class_never_appears_even_when_its_cam_is_strongest():
    images, cams = object_scene()
    cams[:, 0] = 50.0  # class 1: a huge, flat activation everywhere, but class 1 is not in the tags
    cams[:, 2, :6, :6] = 80.0  # class 3: the strongest activation of all in one corner, not tagged either
    label = make_pseudo_labels(cams, images, tags_for(2), ModelConfig(crf_iters=3), make_crf("torch", iters=3))
    assert not ((label == 1) | (label == 3)).any()
    baseline = make_pseudo_labels(cams, images, tags_for(2), ModelConfig(use_fbe=False), None)
    assert not ((baseline == 1) | (baseline == 3)).any()


def test_padding_is_unsure_and_does_not_shift_the_normalisation():
    images, cams = object_scene(batch=2)
    valid = torch.ones(2, SIZE, SIZE, dtype=torch.bool)
    valid[1, :, 40:] = False
    cams[1, 1, :, 10:] = 100.0  # a huge activation that lies in the padding only
    crf = make_crf("torch", iters=3)
    label = make_pseudo_labels(cams, images, tags_for(2, batch=2), ModelConfig(crf_iters=3), crf, valid=valid)
    assert (label[1, :, 40:] == IGNORE).all()
    assert (label[0, :, 40:] != IGNORE).any()
    scores = fbe_scores(cams, tags_for(2, batch=2), ModelConfig(), (SIZE, SIZE), valid)
    assert scores[1, 2][valid[1]].max().item() == pytest.approx(1.0)
    assert (scores[1, 1:][:, ~valid[1]] == 0).all()


def test_image_without_tags_is_background_everywhere():
    images, cams = object_scene()
    label = make_pseudo_labels(cams, images, tags_for(), ModelConfig(), make_crf("torch", iters=3))
    assert (label == 0).all()


def test_batch_mixing_untagged_and_multi_tag_images_matches_one_image_at_a_time():
    images, cams = object_scene(batch=3)
    cams[2, 2, :4, :4] = 6.0  # image 2 also has class 3, top-left
    tags = torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 0.0], [0.0, 1.0, 1.0]])
    cfg, crf = ModelConfig(crf_iters=3), make_crf("torch", iters=3)
    batched = make_pseudo_labels(cams, images, tags, cfg, crf)
    for b in range(3):
        assert torch.equal(batched[b], make_pseudo_labels(cams[b:b + 1], images[b:b + 1], tags[b:b + 1], cfg, crf)[0])
    assert (batched[1] == 0).all() and (batched[2] == 3).any() and not (batched[0] == 3).any()


def test_scores_follow_eqs_9_and_10():
    images, cams = object_scene()
    cfg = ModelConfig(gamma=4.0)
    scores = fbe_scores(cams, tags_for(2), cfg, (SIZE, SIZE))
    up = F.interpolate(cams, size=(SIZE, SIZE), mode="bilinear", align_corners=False)[0, 1]
    expected_fg = (up - up.min()) / (up.max() - up.min())
    assert torch.allclose(scores[0, 2], expected_fg, atol=1e-6)
    assert torch.allclose(scores[0, 0], (1 - expected_fg) ** 4, atol=1e-6)
    assert (scores[0, 1] == 0).all() and (scores[0, 3] == 0).all()


def test_alpha_controls_how_many_pixels_are_kept():
    images, cams = object_scene()
    crf = make_crf("torch", iters=3)
    kept = [(make_pseudo_labels(cams, images, tags_for(2), ModelConfig(alpha=alpha), crf) != IGNORE).sum().item()
            for alpha in (0.3, 0.6, 0.9)]
    assert kept[0] > kept[1] > kept[2] > 0


def test_baseline_is_plain_thresholding_without_unsure_pixels():
    images, cams = object_scene()
    valid = torch.ones(1, SIZE, SIZE, dtype=torch.bool)
    valid[:, :4] = False
    cfg = ModelConfig(use_fbe=False, baseline_threshold=0.3)
    label = make_pseudo_labels(cams, images, tags_for(2), cfg, None, valid=valid)[0]
    up = F.interpolate(cams, size=(SIZE, SIZE), mode="bilinear", align_corners=False)[0, 1]
    normalised = up / up[4:].max()
    expected = torch.where(normalised > 0.3, 2, 0)
    assert torch.equal(label[4:], expected[4:])
    assert (label[:4] == IGNORE).all()
    assert set(label[4:].unique().tolist()) == {0, 2}


def test_crf_none_builds_one_from_the_config():
    images, cams = object_scene()
    cfg = ModelConfig(crf_backend="torch", crf_iters=3)
    built = make_pseudo_labels(cams, images, tags_for(2), cfg, None)
    given = make_pseudo_labels(cams, images, tags_for(2), cfg, make_crf("torch", iters=3))
    assert torch.equal(built, given)


def test_bad_valid_mask_is_reported():
    images, cams = object_scene()
    with pytest.raises(ValueError, match=r"valid mask must be \(B, H, W\)"):
        make_pseudo_labels(cams, images, tags_for(2), ModelConfig(), None, valid=torch.ones(1, 10, 10, dtype=torch.bool))


# --- CRF backends -------------------------------------------------------------------------------------


def astronaut_case(size: int = 240) -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-image's astronaut and a blurry CAM-like unary: background, the astronaut, the flag."""
    from skimage import data, transform

    image = (transform.resize(data.astronaut(), (size, size), anti_aliasing=True) * 255).astype(np.uint8)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size

    def blob(cy, cx, sy, sx):
        return np.exp(-((yy - cy) ** 2 / (2 * sy ** 2) + (xx - cx) ** 2 / (2 * sx ** 2)))

    foreground = np.stack([0.9 * blob(0.34, 0.47, 0.19, 0.14), 0.8 * blob(0.25, 0.06, 0.19, 0.06)])
    probs = np.concatenate([(1 - foreground.max(0, keepdims=True)) ** 2, foreground])
    probs /= probs.sum(0, keepdims=True)
    return torch.from_numpy(image).permute(2, 0, 1)[None].contiguous(), torch.from_numpy(probs.astype(np.float32))[None]


@pytest.mark.skipif(not pydensecrf_available(), reason="pydensecrf is not installed")
def test_torch_backend_agrees_with_pydensecrf_on_a_real_image():
    images, probs = astronaut_case()
    exact = make_crf("pydensecrf", iters=10)(images, probs)
    approx = make_crf("torch", iters=10)(images, probs)
    agreement = (exact == approx).float().mean().item()
    assert agreement >= 0.97, f"torch vs pydensecrf label agreement {agreement:.4f}"  # measured 0.9898
    assert (exact != probs.argmax(1)).float().mean().item() > 0.1  # the CRF really changed the labels


@pytest.mark.parametrize("backend", BACKENDS)
def test_crf_snaps_a_shifted_unary_to_the_colour_edge(backend):
    images = torch.zeros(1, 3, 32, 40, dtype=torch.uint8)
    images[:, 0, :, :20] = 200  # red | black, edge at column 20
    ramp = torch.sigmoid((torch.arange(40.0) - 25.0) / 3.0)  # the unary's boundary sits 5 px too far right
    probs = torch.stack([1 - ramp, ramp]).view(1, 2, 1, 40).expand(1, 2, 32, 40).contiguous()
    label = make_crf(backend, iters=10)(images, probs)[0]
    assert (label[:, :20] == 0).all() and (label[:, 20:] == 1).all()


@pytest.mark.parametrize("backend", BACKENDS)
def test_per_image_label_subsets(backend):
    images, probs = astronaut_case(size=40)
    probs = torch.cat([probs, probs])
    probs[1, 1:] = torch.stack([probs[1, 1] + probs[1, 2], torch.zeros_like(probs[1, 2])])
    q = make_crf(backend, iters=3).probabilities(images.repeat(2, 1, 1, 1), probs, num_labels=[3, 2])
    assert q.shape == probs.shape and q.dtype == torch.float32
    assert torch.allclose(q[0].sum(0), torch.ones(40, 40), atol=1e-4)
    assert torch.allclose(q[1, :2].sum(0), torch.ones(40, 40), atol=1e-4)
    assert (q[1, 2] == 0).all()


@pytest.mark.slow  # a spawned worker imports torch: seconds on a small machine
@pytest.mark.skipif(not pydensecrf_available(), reason="pydensecrf is not installed")
def test_pydensecrf_process_pool_gives_the_same_result():
    images, probs = astronaut_case(size=32)
    images, probs = images.repeat(2, 1, 1, 1), torch.cat([probs, probs.flip(-1)])
    pooled = PydenseCRF(iters=3, workers=1)  # one worker process runs the whole batch: the pooled path
    try:
        assert torch.equal(pooled.probabilities(images, probs), PydenseCRF(iters=3).probabilities(images, probs))
    finally:
        pooled.close()


def test_torch_backend_bounds_the_number_of_grid_cells():
    images = torch.randint(0, 256, (1, 3, 30, 30), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    crf = TorchDenseCRF(iters=2, max_bins=20)
    cells, kernel, _ = crf._bilateral_grid(images.float())
    assert kernel.shape[1] <= 20 and int(cells.max()) + 1 == kernel.shape[1]
    assert crf(images, torch.full((1, 2, 30, 30), 0.5)).shape == (1, 30, 30)


def test_torch_backend_batch_equals_one_image_at_a_time():
    """Images of a batch are padded to a common cell count; that must not change any image's result."""
    images, probs = astronaut_case(size=48)
    noise = torch.randint(0, 256, (1, 3, 48, 48), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    images, probs = torch.cat([images, noise, images.flip(-1)]), torch.cat([probs, probs, probs.flip(-1)])
    crf = TorchDenseCRF(iters=5, max_bins=300)  # the noise image needs wider cells than the others
    batched = crf.probabilities(images, probs, num_labels=[3, 2, 3])
    for b, count in enumerate([3, 2, 3]):
        alone = crf.probabilities(images[b:b + 1], probs[b:b + 1, :count], num_labels=[count])
        assert torch.allclose(batched[b, :count], alone[0], atol=1e-5)


def test_auto_backend_choice_and_bad_names():
    assert make_crf("torch").backend == "torch"
    assert make_crf("auto", device="cuda").backend == "torch"  # on an accelerator the CRF stays on it
    expected = "pydensecrf" if pydensecrf_available() else "torch"
    assert make_crf("auto").backend == expected
    assert make_crf("auto", device="cpu").backend == expected
    with pytest.raises(ValueError, match="unknown CRF backend 'densecrf'"):
        make_crf("densecrf")


def test_crf_input_errors_name_the_problem():
    crf = make_crf("torch", iters=1)
    with pytest.raises(ValueError, match="uint8"):
        crf(torch.zeros(1, 3, 8, 8), torch.full((1, 2, 8, 8), 0.5))
    with pytest.raises(ValueError, match="differ in batch size or H x W"):
        crf(torch.zeros(1, 3, 8, 8, dtype=torch.uint8), torch.full((1, 2, 8, 9), 0.5))
    with pytest.raises(ValueError, match="num_labels"):
        crf(torch.zeros(1, 3, 8, 8, dtype=torch.uint8), torch.full((1, 2, 8, 8), 0.5), num_labels=[3])



@pytest.mark.skipif(not pydensecrf_available(), reason="pydensecrf is not installed")
def test_a_crf_started_in_the_background_gives_the_same_marginals_and_suggestion():
    """The suggestion's CRF runs beside FBE's (a helper process): the same numbers as one after the other."""
    from oste_core.suggest.recipe import make_suggestion, suggest

    images, probs = astronaut_case(size=48)
    crf = PydenseCRF(iters=3)
    later = crf.probabilities_later(images, probs)
    assert torch.equal(later(), crf.probabilities(images, probs))
    cfg = ModelConfig(use_fbe=True)
    maps = probs[0, 1:].clone()  # two foreground classes' CAM-like maps
    seg_logits = torch.log(probs[0].clamp_min(1e-4))
    pseudo, suggestion, confidence = suggest(seg_logits, maps, images, [1, 2], cfg, crf)
    expected_pseudo = make_pseudo_labels(maps[None], images, tags_for(1, 2, num_classes=2), cfg, crf)[0]
    expected, expected_confidence = make_suggestion(seg_logits, maps, images[0], [1, 2], expected_pseudo, cfg, crf)
    assert torch.equal(pseudo, expected_pseudo) and torch.equal(suggestion, expected)
    assert torch.equal(confidence, expected_confidence)
    assert (suggestion == 1).any() and (suggestion == 0).any()
