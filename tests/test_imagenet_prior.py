"""The ImageNet class prior: which classes get one, where its map is high, how the suggestion mixes it."""
from __future__ import annotations

import torch

from oste_core.models.backbones import build_backbone
from oste_core.models.backbones.efficientnet_lite import build_efficientnet_lite
from oste_core.models.modules.imagenet_prior import IMAGENET_CLASSES, ImagenetPrior

CHANNELS = 8


def toy_classifier() -> tuple[torch.Tensor, torch.Tensor]:
    """A 1000-way classifier on 8 channels: channel 0 votes for ImageNet's cars, channel 1 for its dogs."""
    weight = torch.zeros(1000, CHANNELS)
    weight[list(IMAGENET_CLASSES["car"]), 0] = 5.0
    weight[list(IMAGENET_CLASSES["dog"]), 1] = 5.0
    return weight, torch.zeros(1000)


def test_voc_names_in_any_spelling_get_a_prior_but_person_and_unknown_names_do_not():
    prior = ImagenetPrior.for_classes(["Car", "person", "TV/Monitor", "dining table", "widget"], toy_classifier())
    assert prior is not None
    assert set(prior.classes) == {1, 3, 4}  # car, tvmonitor, diningtable; 1-based
    assert prior.classes[1] == IMAGENET_CLASSES["car"]
    assert ImagenetPrior.for_classes(["person", "widget"], toy_classifier()) is None
    assert ImagenetPrior.for_classes(["car"], None) is None
    assert all(0 <= i < 1000 for indices in IMAGENET_CLASSES.values() for i in indices)


def test_the_map_is_high_where_the_classifier_sees_the_class_and_peaks_at_one():
    prior = ImagenetPrior.for_classes(["car", "dog"], toy_classifier())
    stage = torch.zeros(CHANNELS, 6, 6)
    stage[0, :3] = 3.0  # car-like cells on the top half
    stage[1, 4:, 4:] = 3.0  # dog-like corner
    maps = prior.class_maps(stage, [1, 2, 2])
    assert set(maps) == {1, 2}
    car, dog = maps[1], maps[2]
    assert float(car.max()) == 1.0 and float(car.min()) >= 0.0
    assert float(car[:3].min()) > 0.9 and float(car[3:].max()) < 0.1
    assert float(dog[4:, 4:].min()) > 0.9 and float(dog[:3].max()) < 0.1


def test_mix_changes_only_tagged_classes_with_a_prior_and_survives_a_save():
    prior = ImagenetPrior.for_classes(["car", "person"], toy_classifier())
    stage = torch.zeros(CHANNELS, 4, 4)
    stage[0, :, :2] = 3.0  # cars on the left half
    cams = torch.rand(2, 16, 16)
    mixed = prior.mix(cams, stage, tags=[1, 2], weight=0.5)
    assert torch.equal(mixed[1], cams[1])  # person: no prior
    assert float(mixed[0].max()) <= 1.0 + 1e-6
    assert float(mixed[0][:, :6].mean()) > float(mixed[0][:, 10:].mean()) + 0.3
    assert torch.equal(prior.mix(cams, stage, tags=[2], weight=0.5), cams)  # car not tagged
    restored = ImagenetPrior.from_state(prior.to_state())
    assert torch.allclose(restored.mix(cams, stage, tags=[1], weight=0.5), prior.mix(cams, stage, tags=[1], weight=0.5),
                          atol=1e-3)


def test_pretrained_backbones_keep_their_imagenet_classifier_and_random_ones_have_none():
    backbone = build_backbone("efficientnet_lite0", 8, "auto", frozen_bn=True)
    weight, bias = backbone.imagenet_classifier
    reference = build_efficientnet_lite(0, output_stride=8, pretrained="auto", with_classifier=True)
    assert torch.equal(weight, reference._fc.weight) and torch.equal(bias, reference._fc.bias)
    assert "_fc.weight" not in backbone.state_dict()  # not part of the run's weights
    assert build_backbone("efficientnet_lite0", 8, "none", frozen_bn=True).imagenet_classifier is None


def test_any_backbone_keeps_a_1000_way_classifier_on_its_last_stage_but_not_another_head():
    from oste_core.models.backbones.base import load_matching_state_dict

    backbone = build_backbone("resnet50", 16, "none")
    state = dict(backbone.state_dict())
    load_matching_state_dict(backbone, {**state, "fc.weight": torch.ones(20, 2048), "fc.bias": torch.zeros(20)}, "voc")
    assert backbone.imagenet_classifier is None  # a 20-class head is not ImageNet's
    load_matching_state_dict(backbone, {**state, "fc.weight": torch.ones(1000, 2048), "fc.bias": torch.zeros(1000)}, "in")
    assert backbone.imagenet_classifier[0].shape == (1000, 2048)
