"""PASCAL VOC segmentation export.

Layout under the export folder::

    voc/SegmentationClass/<stem>.png        palette PNG, pixel value = class index, 255 = unsure
    voc/class_names.txt                     background first, then the classes (index order)
    voc/ImageSets/Segmentation/default.txt  the exported stems
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from oste_core.export.palette import save_palette_png
from oste_core.utils.io import atomic_write_text

VOC_DIR = "voc"


def voc_mask_path(out_dir: Path, stem: str) -> Path:
    return out_dir / VOC_DIR / "SegmentationClass" / f"{stem}.png"


def voc_list_paths(out_dir: Path) -> list[Path]:
    """The class list and the image list written once per export."""
    return [out_dir / VOC_DIR / "class_names.txt", out_dir / VOC_DIR / "ImageSets" / "Segmentation" / "default.txt"]


def write_voc_mask(out_dir: Path, stem: str, mask: np.ndarray) -> Path:
    return save_palette_png(voc_mask_path(out_dir, stem), mask)


def write_voc_lists(out_dir: Path, class_names: Sequence[str], stems: Sequence[str]) -> list[Path]:
    classes_path, list_path = voc_list_paths(out_dir)
    atomic_write_text(classes_path, "".join(f"{name}\n" for name in ["background", *class_names]))
    atomic_write_text(list_path, "".join(f"{stem}\n" for stem in stems))
    return [classes_path, list_path]
