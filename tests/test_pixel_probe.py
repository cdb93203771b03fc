"""The folder pixel classifier: what it learns from, how it mixes, and that its memory stays bounded."""
from __future__ import annotations

import torch

from oste_core.models.modules.pixel_probe import PixelProbe, PixelProbeFit

CHANNELS, SIDE = 6, 8


def photo(seed: int, with_object: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Descriptors (C, 8, 8): channel 0 high on the object (left half) when there is one; its suggestion."""
    generator = torch.Generator().manual_seed(seed)
    descriptors = torch.rand(CHANNELS, SIDE, SIDE, generator=generator) * 0.2
    suggestion = torch.zeros(SIDE * 4, SIDE * 4, dtype=torch.long)  # at 4x the feature size, as an image would be
    if with_object:
        descriptors[0, :, : SIDE // 2] += 1.0
        suggestion[:, : SIDE * 2] = 2
    return descriptors, suggestion


def test_the_probe_learns_the_confident_pixels_and_ignores_the_unsure_ones():
    fit = PixelProbeFit(num_classes=3)
    for seed in range(6):
        descriptors, suggestion = photo(seed, with_object=seed % 2 == 0)
        confidence = torch.ones(suggestion.shape)
        if seed == 5:  # an image whose suggestion is unsure everywhere teaches nothing
            confidence.zero_()
            suggestion[:] = 1
        fit.add(descriptors, suggestion, confidence)
    probe = fit.result()
    descriptors, _ = photo(99, with_object=True)
    probabilities = probe.probabilities(descriptors, tags=[2])
    assert probabilities.shape == (4, SIDE, SIDE)
    on_object, off_object = probabilities[2, :, : SIDE // 2], probabilities[2, :, SIDE // 2:]
    assert float(on_object.min()) > float(off_object.max()) and float(on_object.mean()) > 0.7
    assert float(probabilities[0, :, SIDE // 2:].mean()) > 0.7
    assert float(probabilities[[1, 3]].abs().max()) == 0.0  # classes not tagged get nothing
    assert torch.allclose(probabilities.sum(dim=0), torch.ones(SIDE, SIDE))
    cams = torch.zeros(3, 16, 16)
    mixed = probe.mix(cams, descriptors, tags=[2], weight=0.5)
    assert float(mixed[1, :, :6].mean()) > float(mixed[1, :, 10:].mean()) + 0.2
    assert torch.equal(mixed[[0, 2]], cams[[0, 2]])
    restored = PixelProbe.from_state(probe.to_state())
    assert torch.allclose(restored.probabilities(descriptors, [2]), probabilities)


def test_nothing_to_learn_gives_no_probe():
    fit = PixelProbeFit(num_classes=2)
    assert fit.result() is None
    descriptors, suggestion = photo(0, with_object=False)  # background only
    fit.add(descriptors, suggestion, torch.ones(suggestion.shape))
    assert fit.result() is None


def test_a_large_folder_keeps_a_bounded_uniform_sample():
    fit = PixelProbeFit(num_classes=3, max_pixels=100)
    per_photo = (SIDE // 2) ** 2  # every other cell
    early = late = 0
    for seed in range(60):
        descriptors, suggestion = photo(seed, with_object=True)
        fit.add(descriptors, suggestion, torch.ones(suggestion.shape))
        assert fit.pixel_count <= 2 * fit.max_pixels
    for descriptors in fit._descriptors[:30]:
        early += len(descriptors)
    for descriptors in fit._descriptors[30:]:
        late += len(descriptors)
    assert 100 <= fit.pixel_count <= 200 < 60 * per_photo
    assert abs(early - late) < 0.4 * fit.pixel_count  # the first photos are not favoured over the last
    assert fit.result() is not None
