"""Folder pixel classifier for the suggestion: a softmax regression on the frozen descriptors, taught by the
suggestions themselves. Not part of OSTE.

Each photo's suggestion is built from that photo's maps alone. A classifier that has seen the confident
pixels of every photo of the folder knows what a cat's fur or a road looks like across them, and lifts the
parts one photo's CAM missed (a cat's body, not only its face) and drops what the folder calls background
elsewhere (the road under a car). At the end of a fast-mode training the suggestion of every photo is made
once; its pixels with a confidence above ``threshold`` (a verified mask: all of its labelled pixels), on
every other feature cell, teach a linear softmax over [background, classes] on the standardised descriptors
(``colocalisation.descriptors``). The suggestion then mixes, for each tag, ``(1 - weight) * its score +
weight * the classifier's probability`` (restricted to the tags, scaled to a peak of 1)
(``model.pixel_probe_weight``). A second round taught by the mixed suggestions did not help
(``docs/BENCHMARKS.md``).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass
class PixelProbe:
    """Descriptor mean and spread, and the softmax regression over [background, classes]."""

    mean: Tensor  # (C,)
    std: Tensor  # (C,)
    weight: Tensor  # (K + 1, C)
    bias: Tensor  # (K + 1,)

    def to_state(self) -> dict:
        return {"mean": self.mean.cpu(), "std": self.std.cpu(), "weight": self.weight.cpu(), "bias": self.bias.cpu()}

    @classmethod
    def from_state(cls, state: dict) -> "PixelProbe":
        return cls(*(state[key].float() for key in ("mean", "std", "weight", "bias")))

    def logits(self, image_descriptors: Tensor) -> Tensor:
        """``(K + 1, h, w)`` logits over [background, classes] of descriptors ``(C, h, w)``."""
        device = image_descriptors.device
        flat = (image_descriptors.float().flatten(1).T - self.mean.to(device)) / self.std.to(device)
        logits = torch.addmm(self.bias.to(device), flat, self.weight.to(device).T)
        return logits.T.reshape(-1, *image_descriptors.shape[1:])

    def probabilities(self, image_descriptors: Tensor, tags: list[int]) -> Tensor:
        """``(K + 1, h, w)`` softmax over background and ``tags`` (other classes 0) of descriptors ``(C, h, w)``."""
        return restricted_softmax(self.logits(image_descriptors), tags)

    def mix(self, cams: Tensor, image_descriptors: Tensor, tags: list[int], weight: float) -> Tensor:
        """``cams`` (K, H, W), each scaled to [0, 1], with each tag replaced by
        ``(1 - weight) * cam + weight * its probability scaled to a peak of 1``."""
        return mix_probabilities(cams, self.probabilities(image_descriptors, tags), tags, weight)


def restricted_softmax(logits: Tensor, tags: list[int]) -> Tensor:
    """The softmax over channel 0 (background) and ``tags`` of ``logits`` (K + 1, h, w); other channels 0."""
    allowed = torch.zeros(logits.shape[0], dtype=torch.bool, device=logits.device)
    allowed[[0, *tags]] = True
    return logits.masked_fill(~allowed[:, None, None], float("-inf")).softmax(dim=0)


def mix_probabilities(cams: Tensor, probabilities: Tensor, tags: list[int], weight: float) -> Tensor:
    """``PixelProbe.mix`` from the classifier's probabilities ``(K + 1, h, w)``."""
    probabilities = F.interpolate(probabilities[None], size=cams.shape[-2:], mode="bilinear", align_corners=False)[0]
    mixed = cams.clone()
    for class_index in dict.fromkeys(tags):
        probability = probabilities[class_index].to(cams.device)
        mixed[class_index - 1] = (1.0 - weight) * cams[class_index - 1] + weight * probability / probability.max().clamp_min(1e-6)
    return mixed


class PixelProbeFit:
    """Collects the confident pixels of the folder's suggestions; ``result`` fits the classifier on them.

    Memory stays bounded on large folders: once more than ``2 * max_pixels`` are held, each is dropped with
    probability 1/2 and later ones are taken with the same halved probability, so every pixel has the same
    chance to be kept (between ``max_pixels`` and twice that remain, stored as float16).
    """

    def __init__(self, num_classes: int, threshold: float = 0.8, max_pixels: int = 60_000, seed: int = 0) -> None:
        self.num_classes = num_classes
        self.threshold = threshold
        self.max_pixels = max_pixels
        self._generator = torch.Generator().manual_seed(seed)
        self._keep_probability = 1.0
        self._descriptors: list[Tensor] = []
        self._labels: list[Tensor] = []
        self._images: list[int] = []  # which photo each entry came from

    @property
    def pixel_count(self) -> int:
        return sum(len(labels) for labels in self._labels)

    def _sample(self, count: int, probability: float) -> Tensor:
        return torch.rand(count, generator=self._generator) < probability

    def add(self, image_descriptors: Tensor, suggestion: Tensor, confidence: Tensor, image: int = -1) -> None:
        """One photo (numbered ``image``): descriptors ``(C, h, w)``, its suggestion ``(H, W)`` and its confidence."""
        size = image_descriptors.shape[1:]
        label = F.interpolate(suggestion[None, None].float(), size=size, mode="nearest")[0, 0].long().cpu()
        sure = F.interpolate(confidence[None, None].float(), size=size, mode="bilinear",
                             align_corners=False)[0, 0].cpu() > self.threshold
        every_other = torch.zeros_like(sure)
        every_other[::2, ::2] = True
        keep = sure & every_other & (label <= self.num_classes)
        descriptors, labels = image_descriptors.cpu()[:, keep].T.half(), label[keep]
        if self._keep_probability < 1.0:
            taken = self._sample(len(labels), self._keep_probability)
            descriptors, labels = descriptors[taken], labels[taken]
        self._descriptors.append(descriptors)
        self._labels.append(labels)
        self._images.append(image)
        if self.pixel_count > 2 * self.max_pixels:
            self._keep_probability /= 2
            for index, labels in enumerate(self._labels):
                taken = self._sample(len(labels), 0.5)
                self._descriptors[index], self._labels[index] = self._descriptors[index][taken], labels[taken]

    def sample(self) -> tuple[Tensor, Tensor, Tensor] | None:
        """The kept pixels: descriptors ``(N, C)`` float16, labels ``(N,)`` and the photo each came from ``(N,)``;
        None before any was added."""
        if not self._labels:
            return None
        images = torch.cat([torch.full((len(labels),), image, dtype=torch.int32)
                            for image, labels in zip(self._images, self._labels)])
        return torch.cat(self._descriptors), torch.cat(self._labels), images

    def result(self, steps: int = 100, seed: int = 0) -> PixelProbe | None:
        """The classifier fitted on the kept pixels (``fit_probe``)."""
        kept = self.sample()
        return None if kept is None else fit_probe(kept[0], kept[1], self.num_classes, steps=steps, seed=seed)


@torch.no_grad()
def fit_probe(descriptors: Tensor, labels: Tensor, num_classes: int, pixel_weight: Tensor | None = None,
              steps: int = 100, lr: float = 1e-2, weight_decay: float = 1e-4, seed: int = 0) -> PixelProbe | None:
    """A softmax regression over [background, classes] on ``descriptors`` (N, C) with ``labels`` (N,): full-batch
    Adam, classes weighted by 1 / sqrt(their share of the pixels), each pixel also by ``pixel_weight`` (default
    1: the class balance stays that of the pixels, however much some of them weigh). None without pixels of
    background and at least one class."""
    if len(labels) == 0:
        return None
    pixel_weight = torch.ones(len(labels)) if pixel_weight is None else pixel_weight.float()
    counts = torch.bincount(labels, minlength=num_classes + 1).float()
    if counts[0] == 0 or int((counts[1:] > 0).sum()) == 0:
        return None
    descriptors = descriptors.float()
    mean, std = descriptors.mean(dim=0), descriptors.std(dim=0).clamp_min(1e-3)
    standardised = (descriptors - mean) / std
    class_weight = torch.where(counts > 0, (counts.sum() / counts.clamp_min(1e-6)).sqrt(), torch.zeros_like(counts))
    weight = class_weight[labels] * pixel_weight
    weight = weight / weight.sum()
    generator = torch.Generator().manual_seed(seed)
    linear = torch.nn.Linear(standardised.shape[1], num_classes + 1)
    bound = 1.0 / standardised.shape[1] ** 0.5
    linear.weight.uniform_(-bound, bound, generator=generator)
    linear.bias.zero_()
    optimizer = torch.optim.Adam(linear.parameters(), lr=lr, weight_decay=weight_decay)
    with torch.enable_grad():
        for _ in range(steps):
            optimizer.zero_grad()
            (F.cross_entropy(linear(standardised), labels, reduction="none") * weight).sum().backward()
            optimizer.step()
    return PixelProbe(mean, std, linear.weight.detach().clone(), linear.bias.detach().clone())
