"""Suggested tags for the images that are not tagged yet: what a trained run's classifier sees in them.

Every class gets a probability per image: the run's image classifier (the sigmoid of the CAM head's
pooled logits, on the features the run trained on: the fast mode's working size), and for a class with an
ImageNet prior (``imagenet_prior.py``) also the frozen backbone's ImageNet classifier: its softmax on the
pooled last stage, summed over the class's ImageNet classes. Either one can say a class is there (`combine`
takes the larger): ImageNet misses classes whose photos it knows under other names, and the folder's
classifier misses classes with few tagged photos (docs/EXPERIMENTS.md, 2026-12-04). A class at
``DEFAULT_THRESHOLD`` or above is suggested. `accept` turns sure suggestions into tags: an image is tagged
with its classes at ``threshold`` or above only if every other class is at ``1 - threshold`` or below; the
others are left for review, most uncertain first (`uncertainty`).

Suggestions are kept in the run folder as ``suggested_tags.csv`` (``image,class,probability,classifier,
imagenet``), written at the end of a training for the folder's untagged images.
"""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from oste_core.data import ImageLoadError, LabelledFolder, load_image
from oste_core.data.image_io import downscale
from oste_core.engine.predictor import Predictor
from oste_core.models.backbones.conv_bn import reuse_folded_weights
from oste_core.utils.io import atomic_write_text

DEFAULT_THRESHOLD = 0.5
SUGGESTIONS_FILE = "suggested_tags.csv"


@dataclass(frozen=True)
class SuggestedTag:
    """One class's probability for one image, and the two votes it comes from."""

    name: str
    probability: float
    classifier: float
    imagenet: float | None = None  # None: the class has no ImageNet prior


def combine(classifier: float, imagenet: float | None) -> float:
    """The suggested probability: the classifier's, or the ImageNet vote where there is one and it is higher."""
    return classifier if imagenet is None else max(classifier, imagenet)


def uncertainty(tags: list[SuggestedTag]) -> float:
    """How unsure an image's suggestion is: the largest ``1 - |2p - 1|`` over its classes (0 sure, 1 a toss-up)."""
    return max((1.0 - abs(2.0 * tag.probability - 1.0) for tag in tags), default=0.0)


def is_sure(tags: list[SuggestedTag], threshold: float) -> bool:
    """Whether every class is at ``threshold`` or above, or at ``1 - threshold`` or below."""
    return all(t.probability >= threshold or t.probability <= 1.0 - threshold for t in tags)


def suggested_names(tags: list[SuggestedTag], threshold: float = DEFAULT_THRESHOLD) -> list[str]:
    """The classes at ``threshold`` or above, most probable first."""
    return [tag.name for tag in sorted(tags, key=lambda t: -t.probability) if tag.probability >= threshold]


class TagSuggester:
    """Suggests tags from a trained run (its classifier and, in the fast mode, its ImageNet prior)."""

    def __init__(self, predictor: Predictor) -> None:
        self.predictor = predictor
        self.model = predictor.model
        train = predictor.cfg.train
        # the size the classifier trained at: the fast mode's working size (its predictor enlarges it for masks)
        self.working_side = train.fast_max_side if train.freeze_backbone else train.max_side

    @classmethod
    def from_run(cls, run_dir: str | Path, device: str = "auto") -> "TagSuggester":
        return cls(Predictor.from_run(run_dir, device=device))

    @torch.no_grad()
    def suggest(self, image_path: str | Path) -> list[SuggestedTag]:
        """Every class's `SuggestedTag` for one image (ImageLoadError if unreadable), most probable first."""
        image = downscale(load_image(image_path, max_side=self.predictor.max_side), self.working_side)
        pixels = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].to(self.predictor.device)
        with reuse_folded_weights():
            last = self.model.backbone(self.model.backbone.normalise(pixels))[-1]
        logits, _ = self.model.cam_head(last.float())
        classifier = torch.sigmoid(logits[0].float()).cpu().tolist()
        prior = self.predictor.priors.imagenet_prior
        votes = prior.image_votes(last[0]) if prior is not None else {}
        tags = [SuggestedTag(name, combine(p, votes.get(index)), p, votes.get(index))
                for index, (name, p) in enumerate(zip(self.predictor.class_names, classifier), start=1)]
        return sorted(tags, key=lambda tag: -tag.probability)

    def suggest_folder(self, folder: LabelledFolder, rels: list[str] | None = None,
                       on_progress: Callable[[int, int], None] | None = None) -> dict[str, list[SuggestedTag]]:
        """rel -> suggestions for ``rels`` (default: the folder's untagged images); unreadable ones are left out
        and reported in ``predictor.problems``."""
        rels = list(folder.untagged if rels is None else rels)
        found: dict[str, list[SuggestedTag]] = {}
        for done, rel in enumerate(rels, start=1):
            try:
                found[rel] = self.suggest(folder.root / rel)
            except ImageLoadError as exc:
                self.predictor.problems.append(str(exc))
            if on_progress is not None:
                on_progress(done, len(rels))
        return found


def save_suggestions(path: str | Path, suggestions: dict[str, list[SuggestedTag]]) -> Path:
    """Write ``suggested_tags.csv``: one row per image and class."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["image", "class", "probability", "classifier", "imagenet"])
    for rel, tags in suggestions.items():
        writer.writerows([rel, t.name, f"{t.probability:.4f}", f"{t.classifier:.4f}",
                          "" if t.imagenet is None else f"{t.imagenet:.4f}"] for t in tags)
    return atomic_write_text(path, buffer.getvalue())


def load_suggestions(path: str | Path) -> dict[str, list[SuggestedTag]]:
    """Read ``suggested_tags.csv`` ({} when absent); each image's tags most probable first."""
    path = Path(path)
    if not path.is_file():
        return {}
    found: dict[str, list[SuggestedTag]] = {}
    with open(path, newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            imagenet = row.get("imagenet") or None
            found.setdefault(row["image"], []).append(SuggestedTag(
                row["class"], float(row["probability"]), float(row["classifier"]),
                None if imagenet is None else float(imagenet)))
    return {rel: sorted(tags, key=lambda t: -t.probability) for rel, tags in found.items()}


@dataclass
class Accepted:
    """What `accept` did: the images it tagged (rel -> tags) and those it left for review."""

    tagged: dict[str, list[str]]
    left: list[str]


def accept(folder: LabelledFolder, suggestions: dict[str, list[SuggestedTag]], threshold: float,
           rels: list[str] | None = None) -> Accepted:
    """Tag each untagged image of ``rels`` (default: all with suggestions) whose suggestion is sure at
    ``threshold`` (see the module docstring); call ``folder.save_tags()`` to keep them."""
    tagged: dict[str, list[str]] = {}
    left: list[str] = []
    for rel in (list(suggestions) if rels is None else rels):
        tags = suggestions.get(rel)
        if rel not in folder.untagged or tags is None:
            continue
        if is_sure(tags, threshold):
            names = [name for name in suggested_names(tags, threshold) if name in folder.class_names]
            folder.set_tags(rel, names)
            tagged[rel] = names
        else:
            left.append(rel)
    return Accepted(tagged, left)


def write_run_suggestions(run_dir: str | Path, folder: LabelledFolder, device: str = "auto",
                          on_progress: Callable[[int, int], None] | None = None) -> Path | None:
    """Suggest the tags of every untagged image of ``folder`` into ``run_dir/suggested_tags.csv`` (None: no
    untagged image)."""
    if not folder.untagged:
        return None
    suggester = TagSuggester.from_run(run_dir, device=device)
    return save_suggestions(Path(run_dir) / SUGGESTIONS_FILE, suggester.suggest_folder(folder, on_progress=on_progress))
