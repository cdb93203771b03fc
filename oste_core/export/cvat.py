"""CVAT "Segmentation mask 1.1" export: one zip, written atomically, holding::

    labelmap.txt                        "# label:color_rgb:parts:actions", background:0,0,0::, one line per class
    ImageSets/Segmentation/default.txt  the stems
    SegmentationClass/<stem>.png        RGB, each class in its VOC colour
    SegmentationObject/<stem>.png       RGB, each connected region (8-connected) in its own VOC colour

CVAT has no void label, so unsure pixels (255) are exported as background. Instance colours are
VOC palette entries 1, 2, ... (they repeat after 254 regions).
"""
from __future__ import annotations

import io
import zipfile
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, Sequence

import cv2
import numpy as np
from PIL import Image

from oste_core.export.palette import VOC_PALETTE
from oste_core.utils.io import atomic_path

CVAT_ZIP = "cvat_segmentation_mask_1.1.zip"


def cvat_zip_path(out_dir: Path) -> Path:
    return out_dir / CVAT_ZIP


def labelmap_text(class_names: Sequence[str]) -> str:
    lines = ["# label:color_rgb:parts:actions", "background:0,0,0::"]
    lines += [f"{name}:{','.join(str(c) for c in VOC_PALETTE[i])}::" for i, name in enumerate(class_names, start=1)]
    return "\n".join(lines) + "\n"


def class_colours(mask: np.ndarray) -> np.ndarray:
    """(H, W, 3) RGB: VOC colour of each class, unsure (255) as background."""
    return VOC_PALETTE[np.where(mask == 255, 0, mask)]


def instance_colours(mask: np.ndarray) -> np.ndarray:
    """(H, W, 3) RGB: every connected region of every class in its own colour, background black."""
    instances = np.zeros(mask.shape, dtype=np.int64)
    count = 0
    for value in np.unique(mask):
        if value in (0, 255):
            continue
        regions, components = cv2.connectedComponents((mask == value).astype(np.uint8), connectivity=8)
        inside = components > 0
        instances[inside] = components[inside] + count
        count += regions - 1
    colour_index = np.where(instances > 0, (instances - 1) % 254 + 1, 0)
    return VOC_PALETTE[colour_index]


def _png(rgb: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb, dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


@contextmanager
def cvat_zip(path: Path, class_names: Sequence[str]) -> Iterator[Callable[[str, np.ndarray], None]]:
    """Yield ``add(stem, mask)``; the zip appears at ``path`` only when the block completes."""
    stems: list[str] = []
    with atomic_path(path) as temporary:
        with zipfile.ZipFile(temporary, "w", compression=zipfile.ZIP_DEFLATED) as archive:

            def add(stem: str, mask: np.ndarray) -> None:
                archive.writestr(f"SegmentationClass/{stem}.png", _png(class_colours(mask)))
                archive.writestr(f"SegmentationObject/{stem}.png", _png(instance_colours(mask)))
                stems.append(stem)

            yield add
            archive.writestr("labelmap.txt", labelmap_text(class_names))
            archive.writestr("ImageSets/Segmentation/default.txt", "".join(f"{stem}\n" for stem in stems))
