"""The class co-localisation cue (DDT) on synthetic descriptors: it finds the object the photos share."""
from __future__ import annotations

import torch

from oste_core.models.modules.colocalisation import Colocalisation, ColocalisationFit

CHANNELS, SIZE = 8, 12


def photo(generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Descriptors (C, h, w) of a photo whose object (a random rectangle) lifts channels 4-7, on a
    background with its own offset in channels 0-3; and the object mask."""
    features = torch.randn(CHANNELS, SIZE, SIZE, generator=generator) * 0.3
    features[:4] += torch.randn(4, 1, 1, generator=generator) * 0.5
    top, left = torch.randint(0, SIZE - 6, (2,), generator=generator).tolist()
    mask = torch.zeros(SIZE, SIZE, dtype=torch.bool)
    mask[top:top + 6, left:left + 6] = True
    features[4:, mask] += 3.0
    return features, mask


def part_cam(mask: torch.Tensor, on_object: bool = True) -> torch.Tensor:
    """A CAM (K=2, h, w) for class 1 that lights only part of the object (or a background corner)."""
    cam = torch.zeros(2, SIZE, SIZE)
    if on_object:
        rows, cols = mask.nonzero()[:, 0], mask.nonzero()[:, 1]
        cam[0, rows.min():rows.min() + 2, cols.min():cols.min() + 2] = 1.0
    else:
        cam[0][~mask] = 1.0
    return cam


def fitted(on_object: bool = True) -> Colocalisation:
    generator = torch.Generator().manual_seed(0)
    fit = ColocalisationFit()
    for _ in range(10):
        features, mask = photo(generator)
        fit.add(features, part_cam(mask, on_object), tags=[1])
    result = fit.result()
    assert result is not None and result.classes == [1]
    return result


def test_the_map_covers_the_whole_shared_object_not_only_the_cam_part():
    colocalisation = fitted()
    features, mask = photo(torch.Generator().manual_seed(99))  # a photo the fit never saw
    objectness = colocalisation.class_map(features, 1)
    assert objectness is not None and objectness.shape == (SIZE, SIZE)
    assert float(objectness.min()) >= 0.0 and float(objectness.max()) <= 1.0
    assert float(objectness[mask].mean()) > 0.7 and float(objectness[~mask].mean()) < 0.1
    assert colocalisation.class_map(features, 2) is None  # class 2 was never tagged


def test_the_direction_follows_the_cam_sign():
    features, mask = photo(torch.Generator().manual_seed(99))
    inverted = fitted(on_object=False).class_map(features, 1)
    assert float(inverted[~mask].mean()) > float(inverted[mask].mean())


def test_mix_changes_only_tagged_fitted_classes_and_keeps_the_range():
    colocalisation = fitted()
    features, mask = photo(torch.Generator().manual_seed(5))
    cams = torch.rand(2, 24, 24) * 3.0  # at image size (twice the feature size)
    mixed = colocalisation.mix(cams, features, tags=[1], weight=0.5)
    assert torch.equal(mixed[1], cams[1])
    assert float(mixed[0].min()) >= 0.0 and float(mixed[0].max()) <= 1.0
    assert torch.equal(colocalisation.mix(cams, features, tags=[2], weight=0.5), cams)
    restored = Colocalisation.from_state(colocalisation.to_state())
    assert torch.equal(restored.mix(cams, features, [1], 0.5), mixed)
