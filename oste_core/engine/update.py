"""The update: a finished (or stopped) run continued for a time budget with the annotator's pixels.

`Trainer.run_update` trains the run again from its latest weights, with its own settings
(``checkpoints.load_run_settings`` / ``load_weights``), at a constant lr (``train.lr * train.update_lr_mult``)
and the segmentation losses on from the first step; every batch holds the images with a verified mask or
corrections (up to half of it, ``steps.batch_indices``) and the rest at random. The frozen features do not
change, so the suggestion stage's fits are kept. ``model.pt`` is replaced at the end; a cancelled update
leaves it as it was. `UserMasks` gives the annotator's pixels of an image to the fast mode's steps (of an
update or of a training).
"""
from __future__ import annotations

import numpy as np

from oste_core.data import LabelledFolder, Sample
from oste_core.suggest.corrections import user_labels


class UserMasks:
    """The annotator's masks of a folder at a given size (nearest), loaded once: a verified mask (full
    supervision) or sparse corrections (their pixels override the pseudo-label); labels past the classes
    become 255."""

    def __init__(self, folder: LabelledFolder) -> None:
        self.folder = folder
        self._masks: dict[tuple[str, tuple[int, int]], tuple[np.ndarray, bool] | None] = {}

    def get(self, sample: Sample, size: tuple[int, int]) -> tuple[np.ndarray, bool] | None:
        """``(mask, is_verified)`` or None when the image has neither."""
        key = (sample.stem, size)
        if key not in self._masks:
            mask, verified = user_labels(self.folder.root, sample.stem, sample.verified_mask, size,
                                         self.folder.num_classes)
            self._masks[key] = None if mask is None else (mask, verified)
        return self._masks[key]
