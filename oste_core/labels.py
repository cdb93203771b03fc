"""The special label values shared by every mask: pseudo-labels, suggestions, verified masks, ground truth, exports.

Labels are class indices: ``BACKGROUND`` (0), then 1..K for the classes of ``classes.txt`` in order, and
``UNSURE`` (255) for pixels without a label: FBE's unsure pixels, pixels an annotator painted "unsure",
VOC's void border, image padding. ``UNSURE`` pixels are ignored by the losses and by the metrics.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

BACKGROUND = 0
UNSURE = 255


def tags_multi_hot(tags: Sequence[int], num_classes: int, device: torch.device | str | None = None) -> torch.Tensor:
    """(K,) float tensor: 1 at each tag (1-based class index), else 0."""
    vector = torch.zeros(num_classes, device=device)
    if tags:
        vector[[k - 1 for k in tags]] = 1.0
    return vector


def clean_labels(mask: np.ndarray, num_classes: int) -> np.ndarray:
    """``mask`` with every label that is not background, a class (1..``num_classes``) or unsure set to unsure."""
    mask[(mask > num_classes) & (mask != UNSURE)] = UNSURE
    return mask
