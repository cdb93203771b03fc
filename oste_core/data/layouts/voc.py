"""The PASCAL VOC layout: ``JPEGImages/``, ``Annotations/*.xml`` (the object names become the tags),
``ImageSets/Segmentation/<split>.txt`` splits (``split``; default: every image with an annotation) and
``SegmentationClass/<id>.png`` as ground truth (palette index = class index).

The classes are the 20 VOC classes in the standard order whenever every name is a VOC class, so the
ground-truth indices match; otherwise the sorted names (add a ``classes.txt`` to fix the order). Stems are
the VOC image ids. Once ``tags.csv`` exists it gives the tags instead of the annotations.
"""
from __future__ import annotations

import os
import xml.etree.ElementTree as ElementTree
from pathlib import Path

from oste_core.data.folder import CLASSES_FILE, TAGS_FILE, LabelledFolder, clean_tags
from oste_core.data.image_io import ImageLoadError, is_image_file
from oste_core.data.layouts.common import build_samples, csv_tags, listed_classes
from oste_core.data.problems import CLASS_ORDER, MISSING_FILE, UNREADABLE_ANNOTATION, FolderError, Problem

VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)


def open_voc(root: Path, split: str | None) -> LabelledFolder:
    """The VOC folder at ``root``, only the image set ``split`` when given."""
    problems: list[str] = []
    images = {Path(e.name).stem: e.name for e in os.scandir(root / "JPEGImages") if e.is_file() and is_image_file(e.name)}
    if not images:
        raise FolderError(f"{root / 'JPEGImages'}: no images found")
    tags_path = root / TAGS_FILE
    if tags_path.is_file():
        rels = {f"JPEGImages/{name}" for name in images.values()}
        rows = {Path(rel).stem: tags for rel, tags in csv_tags(root, rels, problems).items()}
        tags_source = tags_path
        if split is not None:
            wanted = set(_voc_ids(root, split))
            rows = {image_id: tags for image_id, tags in rows.items() if image_id in wanted}
    else:
        tags_source = root / "Annotations"
        rows = _annotated_tags(root, images, split, problems)
    class_names = listed_classes(root, rows, tags_source)
    if class_names is None:
        names = {tag for tags in rows.values() for tag in tags}
        class_names = list(VOC_CLASSES) if names <= set(VOC_CLASSES) else sorted(names)
        if class_names != list(VOC_CLASSES) and class_names:
            problems.append(Problem(
                f"{tags_source}: the class names are not the 20 VOC classes; using them sorted "
                f"(write {CLASSES_FILE} to choose the order that SegmentationClass indices follow)", CLASS_ORDER))
    entries = ((f"JPEGImages/{images[i]}", i, tags) for i, tags in rows.items())
    samples = build_samples(root, "voc", entries, problems)
    untagged = sorted(f"JPEGImages/{name}" for image_id, name in images.items() if image_id not in rows) if split is None else []
    stems = {f"JPEGImages/{name}": image_id for image_id, name in images.items()}
    return LabelledFolder(root, "voc", class_names, samples, problems, untagged, split, stems)


def _annotated_tags(root: Path, images: dict[str, str], split: str | None, problems: list[str]) -> dict[str, list[str]]:
    """Image id -> the object names of its annotation, for the annotated images (of ``split``, when given)."""
    annotations = root / "Annotations"
    xml_ids = sorted(p.stem for p in annotations.glob("*.xml")) if annotations.is_dir() else []
    rows: dict[str, list[str]] = {}
    for image_id in xml_ids if split is None else _voc_ids(root, split):
        xml_path = annotations / f"{image_id}.xml"
        if image_id not in images:
            problems.append(Problem(f"{root / 'JPEGImages' / image_id}.jpg: image not found (skipped)",
                                    MISSING_FILE))
        elif not xml_path.is_file():
            problems.append(Problem(f"{xml_path}: no annotation for this image (skipped)", MISSING_FILE))
        else:
            try:
                rows[image_id] = _voc_object_names(xml_path)
            except ImageLoadError as exc:
                problems.append(Problem(f"{exc} (skipped)", UNREADABLE_ANNOTATION))
    return rows


def _voc_ids(root: Path, split: str) -> list[str]:
    for task in ("Segmentation", "Main"):
        split_file = root / "ImageSets" / task / f"{split}.txt"
        if split_file.is_file():
            lines = split_file.read_text(encoding="utf-8-sig").splitlines()
            return [line.split()[0] for line in lines if line.strip()]
    available = sorted(p.stem for p in (root / "ImageSets" / "Segmentation").glob("*.txt"))
    raise FolderError(
        f"{root}: no split {split!r} (looked for ImageSets/Segmentation/{split}.txt); "
        f"available: {', '.join(available) or 'none'}"
    )


def _voc_object_names(xml_path: Path) -> list[str]:
    try:
        tree = ElementTree.parse(xml_path)
    except (ElementTree.ParseError, OSError) as exc:
        raise ImageLoadError(xml_path, f"unreadable annotation ({exc})") from None
    return clean_tags(obj.findtext("name", default="") for obj in tree.getroot().iter("object"))
