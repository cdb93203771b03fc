"""What the folder pixel classifier learns from, kept so that a correction refits it in seconds.

At the end of a fast-mode training the classifier (``pixel_probe.py``) is taught by the confident pixels of
every photo's suggestion. That bounded sample (descriptors in a compact principal space, labels, the photo
each came from) is saved in the run as ``teaching.pt``. ``FolderTeaching`` adds the annotator's pixels: every cell of a verified mask and every
stroked cell of the sparse corrections, each weighing ``user_weight`` suggestion pixels, and the suggestion's
pixels of those photos are left out (the annotator has said what they are). A refit is one small full-batch
fit on the stored sample; no photo is read again except the corrected ones, once each.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from oste_core.models.modules.pixel_probe import PixelProbe, fit_probe
from oste_core.utils.io import atomic_path

TEACHING_FILE = "teaching.pt"
USER_WEIGHT = 1.0  # an annotator pixel counts as a suggestion pixel (heavier weights did worse: docs/EXPERIMENTS.md)
TEACHING_DIMS = 128  # principal directions kept of the descriptors (1392 for EfficientNet-Lite0)
MAX_PIXELS = 60_000  # suggestion pixels kept


@dataclass
class TeachingSet:
    """The suggestion-taught sample in a compact space: the descriptors standardised (``mean``, ``std``) and
    projected on their ``basis`` (C, d) of principal directions, so a refit is fast and the file small
    (d = ``TEACHING_DIMS``); labels ``(N,)`` and the photo of each pixel (index into ``stems``)."""

    mean: Tensor  # (C,)
    std: Tensor  # (C,)
    basis: Tensor  # (C, d)
    features: Tensor  # (N, d) float16
    labels: Tensor  # (N,)
    images: Tensor  # (N,) int32
    stems: list[str]

    @classmethod
    def from_pixels(cls, descriptors: Tensor, labels: Tensor, images: Tensor, stems: list[str],
                    dims: int = TEACHING_DIMS, max_pixels: int = MAX_PIXELS, seed: int = 0) -> "TeachingSet":
        """At most ``max_pixels`` of the pixels (a random subset), projected on the top ``dims`` directions."""
        if len(labels) > max_pixels:
            keep = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))[:max_pixels]
            descriptors, labels, images = descriptors[keep], labels[keep], images[keep]
        descriptors = descriptors.float()
        mean, std = descriptors.mean(dim=0), descriptors.std(dim=0).clamp_min(1e-3)
        standardised = (descriptors - mean) / std
        _, vectors = torch.linalg.eigh(standardised.T @ standardised)
        basis = vectors[:, -min(dims, vectors.shape[1]):].flip(1).contiguous()
        return cls(mean, std, basis, (standardised @ basis).half(), labels.long(), images.int(), stems)

    def project(self, descriptors: Tensor) -> Tensor:
        """``(N, C)`` descriptors in the compact space ``(N, d)``."""
        return ((descriptors.float().cpu() - self.mean) / self.std) @ self.basis

    def project_grid(self, descriptors: Tensor) -> Tensor:
        """``(C, h, w)`` descriptors of one image in the compact space ``(d, h, w)``."""
        return self.project(descriptors.flatten(1).T).T.reshape(-1, *descriptors.shape[1:])

    def probe(self, compact: PixelProbe) -> PixelProbe:
        """A classifier fitted in the compact space as one on the descriptors (``PixelProbe.probabilities``)."""
        scaled = compact.weight / compact.std  # (K + 1, d)
        return PixelProbe(self.mean.clone(), self.std.clone(), scaled @ self.basis.T,
                          compact.bias - scaled @ compact.mean)

    def save(self, run_dir: str | Path) -> Path:
        path = Path(run_dir) / TEACHING_FILE
        with atomic_path(path) as tmp:
            torch.save({"mean": self.mean, "std": self.std, "basis": self.basis, "features": self.features.half(),
                        "labels": self.labels.to(torch.uint8), "images": self.images, "stems": self.stems}, tmp)
        return path

    @classmethod
    def load(cls, run_dir: str | Path) -> "TeachingSet | None":
        """The run's teaching sample, or None when it has none (older runs) or it cannot be read."""
        path = Path(run_dir) / TEACHING_FILE
        if not path.is_file():
            return None
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            return cls(state["mean"], state["std"], state["basis"], state["features"], state["labels"].long(),
                       state["images"], list(state["stems"]))
        except Exception:  # noqa: BLE001 - an unreadable sample only costs the refit
            return None


@dataclass
class FolderTeaching:
    """The run's teaching sample plus the annotator's pixels per photo; ``fit`` refits the classifier."""

    teaching: TeachingSet
    num_classes: int
    user_weight: float = USER_WEIGHT
    _user: dict[str, tuple[object, Tensor, Tensor]] = field(default_factory=dict, repr=False)

    def known(self, stem: str, version: object) -> bool:
        """True when the pixels of ``stem`` at ``version`` (e.g. its files' mtimes) are already held."""
        held = self._user.get(stem)
        return held is not None and held[0] == version

    def set_user_pixels(self, stem: str, version: object, compact: Tensor | None, labels: Tensor | None) -> None:
        """The annotator's pixels of one photo, their descriptors in the compact space (``None``: it has none
        any more)."""
        if compact is None or labels is None or len(labels) == 0:
            self._user.pop(stem, None)
        else:
            self._user[stem] = (version, compact.half().cpu(), labels.long().cpu())

    @property
    def user_stems(self) -> list[str]:
        return sorted(self._user)

    def identity(self) -> str:
        """What a refit is made from (the photos with annotator pixels and their versions): a refit from the
        same is the same classifier (``fit`` is seeded)."""
        held = sorted((stem, repr(version)) for stem, (version, _, _) in self._user.items())
        return hashlib.sha1(repr(held).encode()).hexdigest()[:16]

    def fit(self, seed: int = 0) -> PixelProbe | None:
        """The classifier, in the compact space (``TeachingSet.probe`` turns it into one on the descriptors),
        taught by the suggestion pixels of the photos without annotator pixels, and by those."""
        teaching = self.teaching
        corrected = torch.tensor([stem in self._user for stem in teaching.stems] + [False])
        keep = ~corrected[teaching.images.long()]
        parts = [(teaching.features[keep], teaching.labels[keep], torch.ones(int(keep.sum())))]
        for _, features, labels in self._user.values():
            parts.append((features, labels, torch.full((len(labels),), self.user_weight)))
        features, labels, weight = (torch.cat(column) for column in zip(*parts))
        return fit_probe(features, labels, self.num_classes, pixel_weight=weight, seed=seed)
