"""labelme JSON export (one ``labelme/<stem>.json`` per image) and its re-rasterisation.

Every connected region (8-connected) of a class becomes a ``polygon`` shape labelled with the
class name. labelme polygons have no holes and later shapes paint over earlier ones (labelme's
``shapes_to_label``), so a hole is written as a ``_background_`` polygon right after the
region that surrounds it, and shapes are ordered by the area of their outer outline, largest
first: whatever lies inside a hole is smaller than the region around it and is painted after
the hole. Unsure pixels (255) are written as ``__ignore__`` polygons, labelme's own convention
for void (``labelme2voc`` turns them into 255). Regions and holes smaller than ``min_area``
pixels are left out. ``imagePath`` is the image's path relative to the JSON file.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from oste_core.utils.io import atomic_write_text

LABELME_VERSION = "5.3.1"
LABELME_DIR = "labelme"
BACKGROUND_LABEL = "_background_"
IGNORE_LABEL = "__ignore__"


def labelme_path(out_dir: Path, stem: str) -> Path:
    return out_dir / LABELME_DIR / f"{stem}.json"


def _shape(label: str, contour: np.ndarray) -> dict:
    points = contour.reshape(-1, 2)
    if len(points) < 3:  # a one-pixel-wide line or a dot: use its (degenerate) bounding box
        x0, y0 = points.min(0)
        x1, y1 = points.max(0)
        points = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]])
    return {
        "label": label,
        "points": [[float(x), float(y)] for x, y in points],
        "group_id": None,
        "description": "",
        "shape_type": "polygon",
        "flags": {},
        "mask": None,
    }


def _hole_shapes(hole: np.ndarray, region: np.ndarray, min_area: int) -> list[dict]:
    """``_background_`` polygons tracing the pixels of one hole of ``region``."""
    x, y, width, height = cv2.boundingRect(hole)
    inside = np.zeros((height, width), dtype=np.uint8)
    cv2.fillPoly(inside, [hole - np.array([x, y], dtype=hole.dtype)], 1)
    inside &= 1 - region[y:y + height, x:x + width]
    if int(inside.sum()) < min_area:
        return []
    contours, _ = cv2.findContours(inside, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE, offset=(x, y))
    return [_shape(BACKGROUND_LABEL, contour) for contour in contours]


def mask_to_shapes(mask: np.ndarray, class_names: Sequence[str], min_area: int = 4) -> list[dict]:
    """labelme shapes that repaint ``mask`` (values 0..K, 255) when drawn in order."""
    groups: list[tuple[float, list[dict]]] = []
    for value in np.unique(mask):
        if value == 0:
            continue
        if value != 255 and value > len(class_names):
            raise ValueError(f"mask value {value} is not a class (there are {len(class_names)} classes)")
        label = IGNORE_LABEL if value == 255 else class_names[value - 1]
        region = (mask == value).astype(np.uint8)
        _, components, stats, _ = cv2.connectedComponentsWithStats(region, connectivity=8)
        contours, hierarchy = cv2.findContours(region, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
        for index, contour in enumerate(contours):
            _, _, first_hole, parent = hierarchy[0][index]
            x, y = contour[0, 0]
            if parent != -1 or stats[components[y, x], cv2.CC_STAT_AREA] < min_area:
                continue
            shapes = [_shape(label, contour)]
            hole = first_hole
            while hole != -1:
                shapes += _hole_shapes(contours[hole], region, min_area)
                hole = hierarchy[0][hole][0]
            groups.append((cv2.contourArea(contour), shapes))
    groups.sort(key=lambda group: -group[0])
    return [shape for _, shapes in groups for shape in shapes]


def labelme_document(
    mask: np.ndarray, class_names: Sequence[str], tags: Sequence[str], image_path: Path, json_path: Path,
    min_area: int = 4,
) -> dict:
    """The labelme JSON content; the image size is the mask's size."""
    try:
        relative = Path(os.path.relpath(image_path, json_path.parent)).as_posix()
    except ValueError:  # another drive on Windows
        relative = Path(image_path).resolve().as_posix()
    return {
        "version": LABELME_VERSION,
        "flags": {name: name in tags for name in class_names},
        "shapes": mask_to_shapes(mask, class_names, min_area),
        "imagePath": relative,
        "imageData": None,
        "imageHeight": int(mask.shape[0]),
        "imageWidth": int(mask.shape[1]),
    }


def write_labelme_json(
    json_path: Path, mask: np.ndarray, class_names: Sequence[str], tags: Sequence[str], image_path: Path,
    min_area: int = 4,
) -> Path:
    document = labelme_document(mask, class_names, tags, image_path, json_path, min_area)
    return atomic_write_text(json_path, json.dumps(document, ensure_ascii=False, indent=2))


def labelme_to_mask(json_path: str | Path, class_names: Sequence[str]) -> np.ndarray:
    """Re-rasterise a labelme JSON (polygons filled in shape order) to a (H, W) uint8 mask."""
    json_path = Path(json_path)
    try:
        document = json.loads(json_path.read_text(encoding="utf-8"))
        height, width = int(document["imageHeight"]), int(document["imageWidth"])
        shapes = document["shapes"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{json_path}: not a readable labelme file ({exc})") from None
    values = {BACKGROUND_LABEL: 0, IGNORE_LABEL: 255, **{name: i for i, name in enumerate(class_names, start=1)}}
    mask = np.zeros((height, width), dtype=np.uint8)
    for number, shape in enumerate(shapes, start=1):
        label, kind = shape.get("label"), shape.get("shape_type", "polygon")
        if label not in values:
            raise ValueError(f"{json_path}: shape {number} has label {label!r}, which is not a class")
        if kind != "polygon":
            raise ValueError(f"{json_path}: shape {number} is a {kind!r}; only polygons are supported")
        points = np.rint(np.asarray(shape["points"], dtype=np.float64)).astype(np.int32)
        cv2.fillPoly(mask, [points], int(values[label]))
    return mask
