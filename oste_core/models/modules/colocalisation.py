"""Class co-localisation cue for the suggestion (DDT: Wei et al., "Deep Descriptor Transforming for Image
Co-Localization", IJCAI 2017). Not part of OSTE.

The photos tagged with a class share its object. The first principal direction of their backbone
descriptors (the last stage and stage 4 at each feature cell, centred on their mean) separates what they
have in common, the object, from their varied backgrounds. A photo's projection on it, clamped at 0 and
scaled to a peak of 1, is an objectness map of that class. The CAM finds the most discriminative part
(a face, a head); this map covers the whole object, so the suggestion mixes the two
(``model.colocalisation_weight``). The direction's sign is chosen so that the projection grows with the
class's CAM over those photos.

It needs every photo's frozen backbone features, so it is fitted at the end of a fast-mode training
(from the feature cache, about a second per 20 photos on 2 CPU cores) and saved with the weights;
an update keeps the fit (the features do not change). What it adds to the suggestion: ``docs/BENCHMARKS.md``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor


def descriptors(stages: list[Tensor | None]) -> Tensor:
    """``(C, h, w)`` descriptors of one image: the last stage and the one before, at the last one's size."""
    last, previous = stages[-1], stages[-2]
    parts = [last]
    if previous is not None:
        parts.append(F.interpolate(previous.float(), size=last.shape[-2:], mode="bilinear", align_corners=False))
    return torch.cat(parts, dim=1)[0].float()


@dataclass
class Colocalisation:
    """Each fitted class's descriptor mean and principal direction (``classes`` 1-based)."""

    classes: list[int]
    means: Tensor  # (n, C)
    directions: Tensor  # (n, C), unit length, sign towards the class's CAM

    def to_state(self) -> dict:
        return {"classes": list(self.classes), "means": self.means.cpu(), "directions": self.directions.cpu()}

    @classmethod
    def from_state(cls, state: dict) -> "Colocalisation":
        return cls(list(state["classes"]), state["means"].float(), state["directions"].float())

    def class_map(self, image_descriptors: Tensor, class_index: int) -> Tensor | None:
        """``(h, w)`` objectness of ``class_index`` in [0, 1], or None when the class was not fitted."""
        if class_index not in self.classes:
            return None
        row = self.classes.index(class_index)
        flat = image_descriptors.flatten(1).T - self.means[row].to(image_descriptors.device)
        projection = (flat @ self.directions[row].to(image_descriptors.device)).clamp_min(0.0)
        projection = projection / projection.max().clamp_min(1e-6)
        return projection.view(image_descriptors.shape[1:])

    def mix(self, cams: Tensor, image_descriptors: Tensor, tags: list[int], weight: float) -> Tensor:
        """``cams`` (K, H, W) with each tagged, fitted class replaced by ``(1 - weight) * min-max CAM + weight * map``."""
        mixed = cams.clone()
        for class_index in tags:
            objectness = self.class_map(image_descriptors, class_index)
            if objectness is None:
                continue
            cam = cams[class_index - 1]
            low, high = cam.min(), cam.max()
            cam = (cam - low) / (high - low).clamp_min(1e-6)
            objectness = F.interpolate(objectness[None, None], size=cam.shape, mode="bilinear", align_corners=False)[0, 0]
            mixed[class_index - 1] = (1.0 - weight) * cam + weight * objectness.to(cam.device)
        return mixed


class ColocalisationFit:
    """Accumulates, per class, the statistics of the descriptors of its photos; ``result`` fits them.

    The covariance uses every other feature cell in each direction (a quarter of the cells: the same
    direction at a quarter of the cost); the mean and the sign use every cell.
    """

    def __init__(self) -> None:
        self._stats: dict[int, dict[str, Tensor | float]] = {}

    def add(self, image_descriptors: Tensor, cams: Tensor, tags: list[int]) -> None:
        """One photo: descriptors ``(C, h, w)``, its CAMs ``(K, h', w')`` and its 1-based tags."""
        flat = image_descriptors.flatten(1).T.double()  # (N, C)
        sampled = image_descriptors[:, ::2, ::2].flatten(1).T.double()
        cams = F.interpolate(cams[None].float(), size=image_descriptors.shape[1:], mode="bilinear",
                             align_corners=False)[0].flatten(1).double()
        channels = flat.shape[1]
        for class_index in set(tags):
            if class_index not in self._stats:  # (C, C) accumulators: allocated once per class, not per photo
                self._stats[class_index] = {
                    "count": 0.0, "sum": torch.zeros(channels, dtype=torch.float64),
                    "sampled_count": 0.0, "sampled_sum": torch.zeros(channels, dtype=torch.float64),
                    "outer": torch.zeros(channels, channels, dtype=torch.float64),
                    "cam_sum": 0.0, "cam_cross": torch.zeros(channels, dtype=torch.float64),
                }
            stats = self._stats[class_index]
            cam = cams[class_index - 1]
            stats["count"] += flat.shape[0]
            stats["sum"] += flat.sum(dim=0).cpu()
            stats["sampled_count"] += sampled.shape[0]
            stats["sampled_sum"] += sampled.sum(dim=0).cpu()
            stats["outer"] += (sampled.T @ sampled).cpu()
            stats["cam_sum"] += float(cam.sum())
            stats["cam_cross"] += (cam @ flat).cpu()

    def result(self) -> Colocalisation | None:
        """The fitted classes (None when nothing was added)."""
        if not self._stats:
            return None
        classes, means, directions = [], [], []
        for class_index in sorted(self._stats):
            stats = self._stats[class_index]
            mean = stats["sum"] / stats["count"]
            sampled_mean = stats["sampled_sum"] / stats["sampled_count"]
            covariance = stats["outer"] / stats["sampled_count"] - torch.outer(sampled_mean, sampled_mean)
            direction = torch.linalg.eigh(covariance).eigenvectors[:, -1]
            # covariance of the projection with the CAM over the class's photos decides the sign
            if float(direction @ (stats["cam_cross"] - mean * stats["cam_sum"])) < 0:
                direction = -direction
            classes.append(class_index)
            means.append(mean.float())
            directions.append(direction.float())
        return Colocalisation(classes, torch.stack(means), torch.stack(directions))
