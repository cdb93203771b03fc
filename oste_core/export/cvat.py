"""CVAT "Segmentation mask 1.1" export: one zip, written atomically, holding::

    labelmap.txt                        "# label:color_rgb:parts:actions", background:0,0,0::, one line per
                                        class, then unsure:224,224,192:: when a mask has unsure pixels
    ImageSets/Segmentation/default.txt  the stems
    SegmentationClass/<stem>.png        RGB, each class in its VOC colour, unsure in (224, 224, 192)
    SegmentationObject/<stem>.png       RGB, each connected region (8-connected) in its own VOC colour

CVAT's importer (Datumaro's VOC reader) maps each colour of SegmentationClass to a label through
labelmap.txt and makes one mask per SegmentationObject colour. CVAT has no void value, so unsure
pixels (255) become masks of their own label ``unsure`` (the VOC void colour) rather than
silently turning into background: the annotator sees and resolves them. The CVAT task then needs
a label of that name. Instance colours are VOC palette entries 1, 2, ... (they repeat after 254
regions, and never use entry 255, the VOC void colour).
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
from oste_core.labels import UNSURE
from oste_core.utils.io import atomic_path

CVAT_ZIP = "cvat_segmentation_mask_1.1.zip"
UNSURE_LABEL = "unsure"


def cvat_zip_path(out_dir: Path) -> Path:
    return out_dir / CVAT_ZIP


def labelmap_text(class_names: Sequence[str], with_unsure: bool = False) -> str:
    """labelmap.txt: background, the classes in index order and, if asked, the ``unsure`` label."""
    labels = [(name, VOC_PALETTE[i]) for i, name in enumerate(class_names, start=1)]
    labels += [(UNSURE_LABEL, VOC_PALETTE[UNSURE])] if with_unsure else []
    lines = ["# label:color_rgb:parts:actions", "background:0,0,0::"]
    lines += [f"{name}:{','.join(str(c) for c in colour)}::" for name, colour in labels]
    return "\n".join(lines) + "\n"


def class_colours(mask: np.ndarray) -> np.ndarray:
    """(H, W, 3) RGB: VOC colour of each class, unsure (255) in the VOC void colour."""
    return VOC_PALETTE[mask]


def instance_colours(mask: np.ndarray) -> np.ndarray:
    """(H, W, 3) RGB: every connected region of every class (unsure too) in its own colour, background black."""
    instances = np.zeros(mask.shape, dtype=np.int64)
    count = 0
    for value in np.unique(mask):
        if value == 0:
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
def cvat_zip(path: Path, class_names: Sequence[str]) -> Iterator[Callable[[str, np.ndarray], bool]]:
    """Yield ``add(stem, mask) -> whether the mask has unsure pixels``; the zip appears at ``path``
    only when the block completes."""
    stems: list[str] = []
    with_unsure = False
    with atomic_path(path) as temporary:
        with zipfile.ZipFile(temporary, "w", compression=zipfile.ZIP_DEFLATED) as archive:

            def add(stem: str, mask: np.ndarray) -> bool:
                nonlocal with_unsure
                archive.writestr(f"SegmentationClass/{stem}.png", _png(class_colours(mask)))
                archive.writestr(f"SegmentationObject/{stem}.png", _png(instance_colours(mask)))
                stems.append(stem)
                unsure = bool((mask == UNSURE).any())
                with_unsure |= unsure
                return unsure

            yield add
            archive.writestr("labelmap.txt", labelmap_text(class_names, with_unsure))
            archive.writestr("ImageSets/Segmentation/default.txt", "".join(f"{stem}\n" for stem in stems))
