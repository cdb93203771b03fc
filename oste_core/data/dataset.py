"""Training dataset with the paper's augmentation: random scale (0.5-1.5), horizontal flip,
normalisation and a random ``crop`` x ``crop`` window.

Where the scaled image is smaller than the crop it is placed at a random offset on a canvas
filled with the mean colour (0 after normalisation); labels there are 255 and ``valid`` False.
The randomness comes from torch's global generator (seeded per worker by the DataLoader; call
`seed_worker` as ``worker_init_fn`` so numpy/random are seeded too), so a run is reproducible.

An image that cannot be read at ``__getitem__`` time does not stop training: the next readable
sample (index + 1, + 2, ...) is returned instead, the problem is logged (``logging`` warning) and
appended to ``TrainDataset.problems`` (in DataLoader worker processes that list is the worker's
own copy; the warning is what reaches the main process).
"""
from __future__ import annotations

import logging
import random

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from oste_core.data.folder import LabelledFolder, Sample
from oste_core.data.image_io import ImageLoadError, load_image, load_mask
from oste_core.data.problems import FolderError
from oste_core.labels import clean_labels, tags_multi_hot

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def seed_worker(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: seed numpy and ``random`` from the worker's torch seed; one torch thread.

    OpenCV's thread count is left alone on purpose: ``cv2.setNumThreads`` in a forked worker whose parent
    already started OpenCV's thread pool deadlocks (seen on Linux with 16 cores;
    ``tests/test_dataset_aug.py`` reproduces the setting).
    """
    torch.set_num_threads(1)
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def _uniform(low: float, high: float) -> float:
    return low + (high - low) * torch.rand(()).item()


def _offsets(size: int, crop: int) -> tuple[int, int]:
    """(source start, destination start) along one axis for a random crop / placement."""
    slack = abs(size - crop)
    shift = int(torch.randint(0, slack + 1, ()).item()) if slack else 0
    return (shift, 0) if size >= crop else (0, shift)


class TrainDataset(Dataset):
    """Augmented training items of a `LabelledFolder` (see the module docstring)."""

    def __init__(
        self,
        folder: LabelledFolder,
        crop: int = 321,
        scale_range: tuple[float, float] = (0.5, 1.5),
        hflip: bool = True,
        max_side: int = 1024,
        mean: tuple[float, float, float] = IMAGENET_MEAN,
        std: tuple[float, float, float] = IMAGENET_STD,
    ) -> None:
        if not folder.samples:
            raise FolderError(f"{folder.root}: no tagged images to train on")
        if crop < 1 or scale_range[0] <= 0 or scale_range[0] > scale_range[1]:
            raise ValueError(f"bad augmentation settings: crop={crop}, scale_range={scale_range}")
        self.folder = folder
        self.samples: list[Sample] = list(folder.samples)
        self.crop = crop
        self.scale_range = (float(scale_range[0]), float(scale_range[1]))
        self.hflip = hflip
        self.max_side = max_side
        self.mean = np.asarray(mean, dtype=np.float32)
        self.std = np.asarray(std, dtype=np.float32)
        self.problems: list[str] = []
        self._unreadable: set[int] = set()

    def __len__(self) -> int:
        return len(self.samples)

    def _load(self, index: int) -> tuple[np.ndarray, np.ndarray | None]:
        sample = self.samples[index]
        image = load_image(sample.image_path, max_side=self.max_side)
        if sample.verified_mask is None:
            return image, None
        mask = load_mask(sample.verified_mask, shape=image.shape[:2])
        clean_labels(mask, self.folder.num_classes)
        return image, mask

    def _load_readable(self, index: int) -> tuple[int, np.ndarray, np.ndarray | None]:
        """Load ``index`` or, if unreadable, the next readable sample."""
        for step in range(len(self.samples)):
            candidate = (index + step) % len(self.samples)
            if candidate in self._unreadable:
                continue
            try:
                return (candidate, *self._load(candidate))
            except ImageLoadError as exc:
                self._unreadable.add(candidate)
                self.problems.append(str(exc))
                log.warning("skipping unreadable training image: %s", exc)
        raise FolderError(f"{self.folder.root}: none of the {len(self.samples)} images can be read")

    def __getitem__(self, index: int) -> dict:
        index, image, mask = self._load_readable(index)
        has_mask = mask is not None
        if mask is None:
            mask = np.full(image.shape[:2], 255, dtype=np.uint8)

        scale = _uniform(*self.scale_range)
        height, width = image.shape[:2]
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        image = cv2.resize(image, size, interpolation=cv2.INTER_LINEAR)
        mask = cv2.resize(mask, size, interpolation=cv2.INTER_NEAREST)
        if self.hflip and torch.rand(()).item() < 0.5:
            image, mask = image[:, ::-1], mask[:, ::-1]

        crop = self.crop
        (src_y, dst_y), (src_x, dst_x) = _offsets(image.shape[0], crop), _offsets(image.shape[1], crop)
        h, w = min(crop, image.shape[0]), min(crop, image.shape[1])
        canvas = np.empty((crop, crop, 3), dtype=np.uint8)
        canvas[:] = np.rint(self.mean * 255).astype(np.uint8)
        labels = np.full((crop, crop), 255, dtype=np.uint8)
        valid = np.zeros((crop, crop), dtype=bool)
        canvas[dst_y:dst_y + h, dst_x:dst_x + w] = image[src_y:src_y + h, src_x:src_x + w]
        labels[dst_y:dst_y + h, dst_x:dst_x + w] = mask[src_y:src_y + h, src_x:src_x + w]
        valid[dst_y:dst_y + h, dst_x:dst_x + w] = True

        normalised = (canvas.astype(np.float32) / 255.0 - self.mean) / self.std
        tags = tags_multi_hot(self.folder.tag_indices(self.samples[index]), self.folder.num_classes)
        return {
            "image": torch.from_numpy(np.ascontiguousarray(normalised.transpose(2, 0, 1))),
            "image_uint8": torch.from_numpy(np.ascontiguousarray(canvas.transpose(2, 0, 1))),
            "tags": tags,
            "mask": torch.from_numpy(labels.astype(np.int64)),
            "has_mask": has_mask,
            "valid": torch.from_numpy(valid),
            "index": index,
        }
