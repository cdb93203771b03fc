"""ImageNet class prior for the suggestion: what the frozen backbone's own ImageNet classifier sees where.
Not part of OSTE.

Image-level tags cannot tell apart two things that always appear together: every street photo tagged
"car" also shows road, so the classifier's CAM for "car" lights up the road (on ``mix/`` 84% of the pixels
with a car CAM above 0.6 are background). The ImageNet classifier of the backbone was trained on a million
photos where cars, cats and dogs are the labelled objects, and it still works on each feature cell: on a
frozen backbone (the fast mode) its softmax at every cell of the last stage, summed over the ImageNet
classes of one of our classes, is a map of where that object is.

``IMAGENET_CLASSES`` names the ImageNet classes of each PASCAL VOC class that ImageNet has. "person" has
none: ImageNet has no person class, and its clothing classes used instead lowered the person IoU on
``mix/`` from 37 to 17. Classes of other names get no prior. For each tagged class with a prior, the
suggestion mixes ``(1 - weight) * its score + weight * the prior map`` (``model.imagenet_prior_weight``).
Measured on ``mix/`` (``docs/BENCHMARKS.md``): car IoU 8 -> about 30, dog 58 -> 69.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor


def _span(first: int, last: int) -> tuple[int, ...]:
    return tuple(range(first, last + 1))


# ImageNet-1k class indices (torchvision's order) per PASCAL VOC class name
IMAGENET_CLASSES: dict[str, tuple[int, ...]] = {
    "aeroplane": (404, 405, 895),  # airliner, airship, warplane
    "bicycle": (444, 671, 870),  # bicycle-built-for-two, mountain bike, tricycle
    "bird": _span(7, 24) + _span(80, 100) + _span(127, 146),
    "boat": (472, 484, 510, 554, 576, 625, 628, 724, 780, 814, 833, 871, 914),  # canoe ... yawl
    "bottle": (440, 720, 737, 898, 907),  # beer, pill, pop, water, wine bottle
    "bus": (654, 779, 874),  # minibus, school bus, trolleybus
    # cars, vans, small trucks and their parts (grille, car wheel); minibus too: it fires on vans (mix/: car +2.5 IoU)
    "car": (407, 436, 468, 479, 511, 555, 569, 573, 575, 581, 609, 627, 654, 656, 661, 675, 717, 734, 751, 817, 864, 867),
    "cat": _span(281, 285),  # tabby, tiger cat, Persian, Siamese, Egyptian cat
    "chair": (423, 559, 765, 857),  # barber chair, folding chair, rocking chair, throne
    "cow": (345, 346, 347),  # ox, water buffalo, bison
    "diningtable": (532,),
    "dog": _span(151, 268),
    "horse": (339, 603),  # sorrel, horse cart
    "motorbike": (665, 670),  # moped, motor scooter
    "pottedplant": (738,),  # pot
    "sheep": (348, 349),  # ram, bighorn
    "sofa": (831,),  # studio couch
    "train": (466, 547, 565, 705, 820, 829),  # bullet train ... streetcar
    "tvmonitor": (664, 782, 851),  # monitor, screen, television
}


def _plain(name: str) -> str:
    """``"TV/Monitor"`` -> ``"tvmonitor"``, ``"dining table"`` -> ``"diningtable"``."""
    return re.sub(r"[^a-z]", "", name.lower())


@dataclass
class ImagenetPrior:
    """The backbone's ImageNet classifier on its last stage, and the ImageNet classes of our classes."""

    classes: dict[int, tuple[int, ...]]  # 1-based class index -> ImageNet class indices
    weight: Tensor  # (1000, C) of the last stage's C channels
    bias: Tensor  # (1000,)

    @classmethod
    def for_classes(cls, class_names: list[str], classifier: tuple[Tensor, Tensor] | None) -> "ImagenetPrior | None":
        """The prior of the named classes ImageNet has (None without a classifier or without such a class)."""
        if classifier is None:
            return None
        known = {_plain(name): indices for name, indices in IMAGENET_CLASSES.items()}
        classes = {index + 1: known[_plain(name)] for index, name in enumerate(class_names) if _plain(name) in known}
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
