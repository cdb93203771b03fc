"""labelme JSON export (one ``labelme/<stem>.json`` per image, plus ``labelme/labels.txt``) and
its re-rasterisation.

Every connected region (8-connected) of a class becomes a ``polygon`` shape labelled with the
class name. Outlines are traced on the mask at its own resolution (a prediction is smaller than
the image: tracing its nearest-neighbour enlargement would give a vertex at every stair step),
simplified with Douglas-Peucker (``cv2.approxPolyDP``, ``epsilon`` = 1 mask pixel by default) and
then scaled to image coordinates, pixel centre to pixel centre. labelme polygons have no holes
and later shapes paint over earlier ones (labelme's ``shapes_to_label``), so a hole is written
as a ``_background_`` polygon right after the region that surrounds it, and shapes are ordered
by the area of their outer outline, largest first: whatever lies inside a hole is smaller than
the region around it and is painted after the hole. Unsure pixels (255) are written as ``__ignore__`` polygons, labelme's own convention
for void (``labelme2voc`` turns them into 255). Regions and holes smaller than ``min_area``
pixels are left out. ``imagePath`` is the image's path relative to the JSON file.

``labels.txt`` lists ``__ignore__``, ``_background_`` and then the classes in index order,
labelme's convention for ``labelme2voc.py --labels`` (which gives class ``i`` the value ``i``).
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
LABELS_FILE = "labels.txt"
BACKGROUND_LABEL = "_background_"
IGNORE_LABEL = "__ignore__"


def labelme_path(out_dir: Path, stem: str) -> Path:
    return out_dir / LABELME_DIR / f"{stem}.json"


def labels_path(out_dir: Path) -> Path:
    return out_dir / LABELME_DIR / LABELS_FILE


def write_labels_txt(out_dir: Path, class_names: Sequence[str]) -> Path:
    """``labelme/labels.txt`` in labelme's convention: ``__ignore__``, ``_background_``, the classes."""
    names = (IGNORE_LABEL, BACKGROUND_LABEL, *class_names)
    return atomic_write_text(labels_path(out_dir), "".join(f"{name}\n" for name in names))


class _Outline:
    """Turns contours traced on a mask into simplified polygons in image coordinates."""

    def __init__(self, mask_shape: tuple[int, int], image_shape: tuple[int, int], epsilon: float) -> None:
        self.scale = np.array([image_shape[1] / mask_shape[1], image_shape[0] / mask_shape[0]])
        self.epsilon = epsilon

    def points(self, contour: np.ndarray) -> np.ndarray:
        """(N, 2) x, y in image pixels: simplified, and mapped pixel centre to pixel centre."""
        points = contour.reshape(-1, 2)
        if self.epsilon > 0 and len(points) > 3:
            simplified = cv2.approxPolyDP(contour, self.epsilon, True).reshape(-1, 2)
            points = simplified if len(simplified) >= 3 else points
        if len(points) < 3:  # a one-pixel-wide line or a dot: use its (degenerate) bounding box
            x0, y0 = points.min(0)
            x1, y1 = points.max(0)
            points = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]])
        return (points + 0.5) * self.scale - 0.5


    def shape(self, label: str, contour: np.ndarray) -> dict:
        return {
            "label": label,
            "points": [[round(float(x), 2), round(float(y), 2)] for x, y in self.points(contour)],
            "group_id": None,
            "description": "",
            "shape_type": "polygon",
            "flags": {},
            "mask": None,
        }


def _hole_shapes(hole: np.ndarray, region: np.ndarray, min_area: int, outline: _Outline) -> list[dict]:
    """``_background_`` polygons tracing the pixels of one hole of ``region``."""
    x, y, width, height = cv2.boundingRect(hole)
    inside = np.zeros((height, width), dtype=np.uint8)
    cv2.fillPoly(inside, [hole - np.array([x, y], dtype=hole.dtype)], 1)
    inside &= 1 - region[y:y + height, x:x + width]
    if int(inside.sum()) < min_area:
        return []
    contours, _ = cv2.findContours(inside, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE, offset=(x, y))
    return [outline.shape(BACKGROUND_LABEL, contour) for contour in contours]


def mask_to_shapes(
    mask: np.ndarray, class_names: Sequence[str], min_area: int = 4,
    image_shape: tuple[int, int] | None = None, epsilon: float = 1.0,
) -> list[dict]:
    """labelme shapes that repaint ``mask`` (values 0..K, 255) when drawn in order.

    ``image_shape`` (H, W), default the mask's: the size the polygons are scaled to.
    ``epsilon``: Douglas-Peucker tolerance in mask pixels (0 keeps every traced vertex).
    """
    outline = _Outline(mask.shape, image_shape or mask.shape, epsilon)
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
            shapes = [outline.shape(label, contour)]
            hole = first_hole
            while hole != -1:
                shapes += _hole_shapes(contours[hole], region, min_area, outline)
                hole = hierarchy[0][hole][0]
            groups.append((cv2.contourArea(contour), shapes))
    groups.sort(key=lambda group: -group[0])
    return [shape for _, shapes in groups for shape in shapes]


def labelme_document(
    mask: np.ndarray, class_names: Sequence[str], tags: Sequence[str], image_path: Path, json_path: Path,
    image_shape: tuple[int, int] | None = None, min_area: int = 4,
) -> dict:
    """The labelme JSON content for an image of ``image_shape`` (H, W; default the mask's)."""
    image_shape = image_shape or mask.shape
    try:
        relative = Path(os.path.relpath(image_path, json_path.parent)).as_posix()
    except ValueError:  # another drive on Windows
        relative = Path(image_path).resolve().as_posix()
    return {
        "version": LABELME_VERSION,
        "flags": {name: name in tags for name in class_names},
        "shapes": mask_to_shapes(mask, class_names, min_area, image_shape),
        "imagePath": relative,
        "imageData": None,
        "imageHeight": int(image_shape[0]),
        "imageWidth": int(image_shape[1]),
    }


def write_labelme_json(
    json_path: Path, mask: np.ndarray, class_names: Sequence[str], tags: Sequence[str], image_path: Path,
    image_shape: tuple[int, int] | None = None, min_area: int = 4,
) -> Path:
    document = labelme_document(mask, class_names, tags, image_path, json_path, image_shape, min_area)
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
