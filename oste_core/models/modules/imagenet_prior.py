"""ImageNet class prior for the suggestion: what the frozen backbone's own ImageNet classifier sees where.
Not part of OSTE.

Image-level tags cannot tell apart two things that always appear together: every street photo tagged
"car" also shows road, so the classifier's CAM for "car" lights up the road. The ImageNet classifier of the
backbone was trained on a million photos where cars, cats and dogs are the labelled objects, and it still
works on each feature cell: on a frozen backbone (the fast mode) its softmax at every cell of the last
stage, summed over the ImageNet classes of one of our classes, is a map of where that object is.

Which ImageNet classes a class means (``imagenet_names.py``): ``priors.yaml`` beside ``classes.txt``, else
the VOC table (``IMAGENET_CLASSES``) for the PASCAL VOC names and their WordNet synonyms, else WordNet
(``puppy``, ``forklift``, ``vehicle``). "person" has none: ImageNet has no person class, and its clothing
classes, tried instead, lowered the person IoU (``docs/PAPER_VS_DEFAULTS.md``). For each tagged class with a
prior, the suggestion mixes ``(1 - weight) * its score + weight * the prior map``
(``model.imagenet_prior_weight``). What it adds per class: ``docs/BENCHMARKS.md``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from .imagenet_names import IMAGENET_CLASSES, NameMatch, match_names  # noqa: F401 - IMAGENET_CLASSES: the VOC table


@dataclass
class ImagenetPrior:
    """The backbone's ImageNet classifier on its last stage, and the ImageNet classes of our classes."""

    classes: dict[int, tuple[int, ...]]  # 1-based class index -> ImageNet class indices
    weight: Tensor  # (1000, C) of the last stage's C channels
    bias: Tensor  # (1000,)

    @classmethod
    def for_classes(cls, class_names: list[str], classifier: tuple[Tensor, Tensor] | None,
                    explicit: dict[str, tuple[int, ...]] | None = None) -> "ImagenetPrior | None":
        """The prior of the classes ImageNet has (`match_names`; ``explicit``: priors.yaml's choices), None
        without a classifier or without such a class."""
        if classifier is None:
            return None
        matches: list[NameMatch] = match_names(class_names, explicit)
        classes = {index + 1: match.classes for index, match in enumerate(matches) if match.classes}
        if not classes:
            return None
        weight, bias = classifier
        return cls(classes, weight.detach().float().cpu(), bias.detach().float().cpu())

    def to_state(self) -> dict:
        return {"classes": {c: list(indices) for c, indices in self.classes.items()},
                "weight": self.weight.half(), "bias": self.bias}

    @classmethod
    def from_state(cls, state: dict) -> "ImagenetPrior":
        return cls({int(c): tuple(indices) for c, indices in state["classes"].items()},
                   state["weight"].float(), state["bias"].float())

    def image_votes(self, last_stage: Tensor) -> dict[int, float]:
        """``{class: probability}`` for every class with a prior: the ImageNet softmax of the pooled
        ``last_stage`` (C, h, w), as the backbone's own classifier sees the image, summed over its classes."""
        pooled = last_stage.float().mean(dim=(1, 2))
        probabilities = (self.weight.to(pooled.device) @ pooled + self.bias.to(pooled.device)).softmax(dim=0)
        return {c: float(probabilities[list(indices)].sum().clamp(0.0, 1.0)) for c, indices in self.classes.items()}

    def class_maps(self, last_stage: Tensor, class_indices: list[int]) -> dict[int, Tensor]:
        """``{class: (h, w) map in [0, 1]}`` for those of ``class_indices`` with a prior: the ImageNet softmax of
        each cell of ``last_stage`` (C, h, w), summed over the class's ImageNet classes, scaled to a peak of 1."""
        wanted = [c for c in dict.fromkeys(class_indices) if c in self.classes]
        if not wanted:
            return {}
        flat = last_stage.float().flatten(1).T  # (h*w, C)
        probabilities = torch.addmm(self.bias.to(flat.device), flat, self.weight.to(flat.device).T).softmax(dim=1)
        maps = {}
        for class_index in wanted:
            summed = probabilities[:, list(self.classes[class_index])].sum(dim=1).view(last_stage.shape[1:])
            maps[class_index] = summed / summed.max().clamp_min(1e-6)
        return maps

    def mix(self, cams: Tensor, last_stage: Tensor, tags: list[int], weight: float) -> Tensor:
        """``cams`` (K, H, W), each scaled to [0, 1], with each tagged class that has a prior replaced by
        ``(1 - weight) * cam + weight * map``."""
        mixed = cams.clone()
        for class_index, prior in self.class_maps(last_stage, tags).items():
            prior = F.interpolate(prior[None, None], size=cams.shape[-2:], mode="bilinear", align_corners=False)[0, 0]
            mixed[class_index - 1] = (1.0 - weight) * cams[class_index - 1] + weight * prior.to(cams.device)
        return mixed
