"""Labelled folders: layout detection and parsing.

`open_folder(root, split=None)` recognises three layouts:

* **native**: images in any subfolders plus ``tags.csv`` (columns ``image,tags``; ``image`` is
  the path relative to the folder with '/' separators, ``tags`` are class names separated by
  ';'; empty tags = an image showing background only) and an optional ``classes.txt`` (one class
  per line, line order = label index 1..K; without it the classes are the sorted unique tags).
  Images that have no row in ``tags.csv`` are listed in ``LabelledFolder.untagged``, not used
  for training; `LabelledFolder.set_tags` turns them into samples.
* **voc** (PASCAL VOC): ``JPEGImages/``, ``Annotations/*.xml`` (the object names become the tags),
  ``ImageSets/Segmentation/<split>.txt`` splits (``split``; default: every image with an
  annotation) and ``SegmentationClass/<id>.png`` as ground truth (palette index = class index).
  The classes are the 20 VOC classes in the standard order whenever every name is a VOC class,
  so the ground-truth indices match; otherwise the sorted names (add a ``classes.txt`` to fix
  the order). Stems are the VOC image ids.
* **subfolders**: one subfolder per class, images directly inside, one tag per image.

For every layout ``classes.txt`` wins when present, and once ``tags.csv`` exists (written by
`LabelledFolder.save_tags`, which also writes ``classes.txt``) it is the source of the tags.
Optional ``masks/<stem>.png`` are ground-truth masks (evaluation) and ``verified/<stem>.png`` the
masks a user verified in the editor. The folders ``masks``, ``verified``, ``runs``, ``exports``
and any folder whose name starts with '.' are never scanned for images.

Stems are unique per folder: a top-level ``img.jpg`` has stem ``img``; a nested image uses its
relative path with '/' replaced by '__' and without the extension (``a/b/img.jpg`` ->
``a__b__img``). Problems that do not stop the folder from being used (an unreadable annotation,
a row naming a missing image, two images with the same stem) are collected in
``LabelledFolder.problems`` as ``"path: reason"`` lines; `validate_images` adds undecodable
images there. Problems that make the folder unusable raise `FolderError`.
"""
from __future__ import annotations

import csv
import io
import os
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from oste_core.data.image_io import ImageLoadError, check_image, is_image_file, load_mask
from oste_core.utils.io import atomic_write_text

TAGS_FILE = "tags.csv"
CLASSES_FILE = "classes.txt"
MASKS_DIR = "masks"
VERIFIED_DIR = "verified"
NEVER_SCANNED = frozenset({MASKS_DIR, VERIFIED_DIR, "runs", "exports"})
RESERVED_CLASS_NAMES = frozenset({"background", "_background_", "__ignore__"})
VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)


class FolderError(ValueError):
    """The folder cannot be used; the message names the folder or file and the problem."""


@dataclass
class Sample:
    """One tagged image of a labelled folder."""

    image_path: Path
    rel: str  # path relative to the folder root, '/' separators
    stem: str  # unique in the folder (see the module docstring)
    tags: list[str] = field(default_factory=list)
    gt_mask: Path | None = None
    verified_mask: Path | None = None


def stem_for(rel: str) -> str:
    """Unique stem of a relative image path: ``a/b/img.jpg`` -> ``a__b__img``, ``img.jpg`` -> ``img``."""
    parent, _, name = rel.rpartition("/")
    base = name.rsplit(".", 1)[0] if "." in name else name
    return f"{parent.replace('/', '__')}__{base}" if parent else base


def _clean_tags(tags: Iterable[str]) -> list[str]:
    """Strip, drop empty names and duplicates, keep the order."""
    cleaned: list[str] = []
    for tag in tags:
        tag = tag.strip()
        if tag and tag not in cleaned:
            cleaned.append(tag)
    return cleaned


def _check_class_name(name: str) -> str:
    name = name.strip()
    if not name or any(ch in name for ch in ";\n\r"):
        raise ValueError(f"invalid class name {name!r}: it must be non-empty and contain no ';' or line break")
    if name.lower() in RESERVED_CLASS_NAMES:
        raise ValueError(f"invalid class name {name!r}: reserved (background is class 0, '__ignore__' means unsure)")
    return name


@dataclass
class LabelledFolder:
    """A parsed labelled folder: foreground ``class_names`` (index 1..K) and tagged ``samples``."""

    root: Path
    layout: str  # "native" | "voc" | "subfolders"
    class_names: list[str]
    samples: list[Sample]
    problems: list[str] = field(default_factory=list)
    untagged: list[str] = field(default_factory=list)  # rel paths of images without a tags.csv row
    split: str | None = None  # the VOC image set this folder was opened with

    @property
    def num_classes(self) -> int:
        """K, the number of foreground classes."""
        return len(self.class_names)

    @property
    def tags_path(self) -> Path:
        return self.root / TAGS_FILE

    @property
    def classes_path(self) -> Path:
        return self.root / CLASSES_FILE

    def verified_path(self, sample: Sample) -> Path:
        """Where the editor stores the verified mask of ``sample`` (then set ``sample.verified_mask``)."""
        return self.root / VERIFIED_DIR / f"{sample.stem}.png"

    def tag_indices(self, sample: Sample) -> list[int]:
        """The sample's tags as 1-based class indices."""
        index = {name: i for i, name in enumerate(self.class_names, start=1)}
        return [index[tag] for tag in sample.tags]

    def find(self, stem_or_rel: str) -> Sample:
        """The sample with this stem or relative path; KeyError when there is none."""
        for sample in self.samples:
            if stem_or_rel in (sample.stem, sample.rel):
                return sample
        raise KeyError(f"{self.root}: no image {stem_or_rel!r}")

    def add_class(self, name: str) -> int:
        """Append a class (if new) and return its 1-based index."""
        name = _check_class_name(name)
        if name not in self.class_names:
            self.class_names.append(name)
        return self.class_names.index(name) + 1

    def set_tags(self, stem_or_rel: str, tags: Iterable[str]) -> Sample:
        """Replace one image's tags in memory (unknown classes are added); call `save_tags` to keep them.

        ``stem_or_rel`` may also be the rel path of an untagged image, which becomes a sample.
        """
        tags = [_check_class_name(tag) for tag in _clean_tags(tags)]
        try:
            sample = self.find(stem_or_rel)
        except KeyError:
            if stem_or_rel not in self.untagged:
                raise
            self.untagged.remove(stem_or_rel)
            stem = Path(stem_or_rel).stem if self.layout == "voc" else stem_for(stem_or_rel)
            sample = _MaskFinder(self.root, self.layout).sample(self.root, stem_or_rel, stem, [])
            self.samples.append(sample)
        for tag in tags:
            self.add_class(tag)
        sample.tags = tags
        return sample

    def save_tags(self) -> Path:
        """Write ``tags.csv`` (and ``classes.txt`` when absent or different), atomically.

        Rows of an existing ``tags.csv`` for images that are not samples here (e.g. unreadable
        ones dropped by `validate_images`) are kept.
        """
        if self.split is not None:
            raise FolderError(f"{self.root}: opened with split {self.split!r}; open it without a split to save tags")
        kept: dict[str, list[str]] = {}
        if self.tags_path.is_file():
            current = {sample.rel for sample in self.samples}
            kept = {rel: tags for rel, tags in _read_tags_csv(self.tags_path)[0].items() if rel not in current}
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["image", "tags"])
        rows = [(sample.rel, sample.tags) for sample in self.samples] + list(kept.items())
        writer.writerows([rel, ";".join(tags)] for rel, tags in rows)
        if not self.classes_path.is_file() or _read_classes(self.classes_path) != self.class_names:
            atomic_write_text(self.classes_path, "".join(f"{name}\n" for name in self.class_names))
        return atomic_write_text(self.tags_path, buffer.getvalue())


class _MaskFinder:
    """Finds ``<stem>.png`` ground-truth and verified masks, listing each mask folder once."""

    def __init__(self, root: Path, layout: str) -> None:
        gt_dirs = [root / "SegmentationClass", root / MASKS_DIR] if layout == "voc" else [root / MASKS_DIR]
        self._gt = [(d, _png_names(d)) for d in gt_dirs]
        self._verified_dir = root / VERIFIED_DIR
        self._verified = _png_names(self._verified_dir)

    def sample(self, root: Path, rel: str, stem: str, tags: list[str]) -> Sample:
        name = f"{stem}.png"
        gt = next((d / name for d, names in self._gt if name in names), None)
        verified = self._verified_dir / name if name in self._verified else None
        return Sample(root / rel, rel, stem, tags, gt, verified)


def _png_names(directory: Path) -> set[str]:
    try:
        return {e.name for e in os.scandir(directory) if e.name.lower().endswith(".png") and e.is_file()}
    except (FileNotFoundError, NotADirectoryError):
        return set()


def _scan_images(root: Path) -> list[str]:
    """Relative '/' paths of all images below ``root``, skipping the never-scanned folders; sorted."""
    found: list[str] = []
    for directory, subdirs, files in os.walk(root):
        subdirs[:] = [d for d in subdirs if not d.startswith(".") and d not in NEVER_SCANNED]
        base = Path(directory).relative_to(root).as_posix()
        prefix = "" if base == "." else f"{base}/"
        found.extend(prefix + name for name in files if is_image_file(name) and not name.startswith("."))
    return sorted(found)


def _read_classes(path: Path) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise FolderError(f"{path}: cannot read the class list ({exc})") from None
    names = [line.strip() for line in text.splitlines() if line.strip()]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise FolderError(f"{path}: classes listed more than once: {', '.join(duplicates)}")
    return names


def _normalise_rel(rel: str) -> str:
    rel = rel.strip().replace("\\", "/")
    while rel.startswith("./"):
        rel = rel[2:]
    return rel


def _read_tags_csv(path: Path) -> tuple[dict[str, list[str]], list[str]]:
    """rel -> tags (file order) and problem lines."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise FolderError(f"{path}: cannot read ({exc})") from None
    reader = csv.reader(io.StringIO(text))
    header = [column.strip().lower() for column in next(reader, [])]
    if "image" not in header or "tags" not in header:
        raise FolderError(f"{path}: the first line must name the columns 'image,tags' (found {','.join(header)!r})")
    image_col, tags_col = header.index("image"), header.index("tags")
    rows: dict[str, list[str]] = {}
    problems: list[str] = []
    for line_number, row in enumerate(reader, start=2):
        if not any(cell.strip() for cell in row):
            continue
        rel = _normalise_rel(row[image_col]) if image_col < len(row) else ""
        tags = _clean_tags(row[tags_col].split(";")) if tags_col < len(row) else []
        if not rel or rel.startswith("/") or ".." in rel.split("/") or rel[1:2] == ":":
            problems.append(f"{path}: line {line_number}: image path {rel!r} must be relative to the folder; row skipped")
            continue
        if rel in rows:
            problems.append(f"{path}: line {line_number}: {rel} is listed twice; the later row is used")
        rows[rel] = tags
    return rows, problems


def _check_known(tags_by_source: dict[str, list[str]], class_names: list[str], tags_source: Path, classes: Path) -> None:
    """FolderError listing every tag that is not a class."""
    known = set(class_names)
    unknown = sorted({tag for tags in tags_by_source.values() for tag in tags if tag not in known})
    if unknown:
        raise FolderError(
            f"{tags_source}: tags name classes that are not in {classes}: {', '.join(unknown)} "
            f"(add them to {classes.name} or fix the tags)"
        )


def _default_classes(all_tags: Iterable[list[str]], prefer_voc: bool) -> list[str]:
    names = {tag for tags in all_tags for tag in tags}
    if prefer_voc and names <= set(VOC_CLASSES):
        return list(VOC_CLASSES)
    return sorted(names)


def _build_samples(
    root: Path, layout: str, entries: Iterable[tuple[str, str, list[str]]], problems: list[str]
) -> list[Sample]:
    """Samples from (rel, stem, tags); a repeated stem is reported and skipped."""
    finder = _MaskFinder(root, layout)
    samples: list[Sample] = []
    seen: dict[str, str] = {}
    for rel, stem, tags in entries:
        if stem in seen:
            problems.append(f"{root / rel}: same stem {stem!r} as {seen[stem]}; rename one of them (skipped)")
            continue
        seen[stem] = rel
        samples.append(finder.sample(root, rel, stem, tags))
    return samples


def _rows_for_images(
    rows: dict[str, list[str]], images: set[str], tags_path: Path, problems: list[str]
) -> dict[str, list[str]]:
    """Keep the rows whose image exists; report the others."""
    kept: dict[str, list[str]] = {}
    for rel, tags in rows.items():
        if rel in images:
            kept[rel] = tags
        else:
            problems.append(f"{tags_path}: row for {rel}: image not found (skipped)")
    return kept


def _open_native(root: Path) -> LabelledFolder:
    problems: list[str] = []
    images = _scan_images(root)
    if not images:
        raise FolderError(f"{root}: no images found (supported: .jpg .jpeg .png .bmp .tif .tiff .webp)")
    tags_path, classes_path = root / TAGS_FILE, root / CLASSES_FILE
    rows: dict[str, list[str]] = {}
    if tags_path.is_file():
        rows, problems = _read_tags_csv(tags_path)
        rows = _rows_for_images(rows, set(images), tags_path, problems)
    if classes_path.is_file():
        class_names = _read_classes(classes_path)
        _check_known(rows, class_names, tags_path, classes_path)
    else:
        class_names = _default_classes(rows.values(), prefer_voc=False)
    samples = _build_samples(root, "native", ((rel, stem_for(rel), tags) for rel, tags in rows.items()), problems)
    untagged = [rel for rel in images if rel not in rows]
    return LabelledFolder(root, "native", class_names, samples, problems, untagged)


def _class_subfolders(root: Path) -> dict[str, list[str]]:
    """Subfolder name -> names of the images directly inside (folders without images are left out)."""
    found: dict[str, list[str]] = {}
    for entry in sorted(os.scandir(root), key=lambda e: e.name):
        if entry.is_dir() and not entry.name.startswith(".") and entry.name not in NEVER_SCANNED:
            names = sorted(e.name for e in os.scandir(entry.path) if e.is_file() and is_image_file(e.name))
            if names:
                found[entry.name] = names
    return found


def _open_subfolders(root: Path, subfolders: dict[str, list[str]]) -> LabelledFolder:
    problems: list[str] = []
    classes_path = root / CLASSES_FILE
    if classes_path.is_file():
        class_names = _read_classes(classes_path)
        missing = sorted(set(subfolders) - set(class_names))
        if missing:
            raise FolderError(
                f"{classes_path}: class subfolders {', '.join(missing)} are not listed (add them to {CLASSES_FILE})"
            )
    else:
        class_names = sorted(subfolders)
    entries = (
        (f"{name}/{image}", stem_for(f"{name}/{image}"), [name]) for name, images in subfolders.items() for image in images
    )
    samples = _build_samples(root, "subfolders", entries, problems)
    return LabelledFolder(root, "subfolders", class_names, samples, problems)


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
    return _clean_tags(obj.findtext("name", default="") for obj in tree.getroot().iter("object"))


def _open_voc(root: Path, split: str | None) -> LabelledFolder:
    problems: list[str] = []
    images = {Path(e.name).stem: e.name for e in os.scandir(root / "JPEGImages") if e.is_file() and is_image_file(e.name)}
    if not images:
        raise FolderError(f"{root / 'JPEGImages'}: no images found")
    tags_path, classes_path = root / TAGS_FILE, root / CLASSES_FILE
    rows: dict[str, list[str]] = {}
    if tags_path.is_file():
        csv_rows, problems = _read_tags_csv(tags_path)
        rels = {f"JPEGImages/{name}" for name in images.values()}
        rows = {Path(rel).stem: tags for rel, tags in _rows_for_images(csv_rows, rels, tags_path, problems).items()}
        tags_source = tags_path
    else:
        annotations = root / "Annotations"
        xml_ids = sorted(p.stem for p in annotations.glob("*.xml")) if annotations.is_dir() else []
        for image_id in xml_ids if split is None else _voc_ids(root, split):
            xml_path = annotations / f"{image_id}.xml"
            if image_id not in images:
                problems.append(f"{root / 'JPEGImages' / image_id}.jpg: image not found (skipped)")
            elif not xml_path.is_file():
                problems.append(f"{xml_path}: no annotation for this image (skipped)")
            else:
                try:
                    rows[image_id] = _voc_object_names(xml_path)
                except ImageLoadError as exc:
                    problems.append(f"{exc} (skipped)")
        tags_source = annotations
    if split is not None and tags_path.is_file():
        wanted = set(_voc_ids(root, split))
        rows = {image_id: tags for image_id, tags in rows.items() if image_id in wanted}
    if classes_path.is_file():
        class_names = _read_classes(classes_path)
        _check_known(rows, class_names, tags_source, classes_path)
    else:
        class_names = _default_classes(rows.values(), prefer_voc=True)
        if class_names != list(VOC_CLASSES) and class_names:
            problems.append(
                f"{tags_source}: the class names are not the 20 VOC classes; using them sorted "
                f"(write {CLASSES_FILE} to choose the order that SegmentationClass indices follow)"
            )
    entries = ((f"JPEGImages/{images[i]}", i, tags) for i, tags in rows.items())
    samples = _build_samples(root, "voc", entries, problems)
    untagged = sorted(f"JPEGImages/{name}" for image_id, name in images.items() if image_id not in rows) if split is None else []
    return LabelledFolder(root, "voc", class_names, samples, problems, untagged, split)


def detect_layout(root: str | Path) -> str:
    """"voc", "native" or "subfolders" (see the module docstring); FolderError when not a folder."""
    root = Path(root)
    if not root.is_dir():
        raise FolderError(f"{root}: folder not found" if not root.exists() else f"{root}: not a folder")
    if (root / "JPEGImages").is_dir():
        return "voc"
    if (root / TAGS_FILE).is_file():
        return "native"
    top_level_images = any(e.is_file() and is_image_file(e.name) for e in os.scandir(root))
    return "subfolders" if not top_level_images and _class_subfolders(root) else "native"


def open_folder(root: str | Path, split: str | None = None) -> LabelledFolder:
    """Detect the layout and parse a labelled folder; ``split`` selects a VOC image set.

    Raises FolderError for a missing or empty folder, an unknown split, tags naming classes that
    are not in ``classes.txt`` or an unreadable ``tags.csv``/``classes.txt``. The root (hence
    every ``Sample.image_path``) is made absolute.
    """
    root = Path(root).expanduser().absolute()
    layout = detect_layout(root)
    if split is not None and layout != "voc":
        raise FolderError(f"{root}: splits are only supported for PASCAL VOC folders (this one is {layout})")
    if layout == "voc":
        return _open_voc(root, split)
    if layout == "subfolders":
        return _open_subfolders(root, _class_subfolders(root))
    return _open_native(root)


def validate_images(folder: LabelledFolder, on_progress: Callable[[int, int], None] | None = None) -> list[str]:
    """Decode every image (and its masks); move unreadable images from ``samples`` to ``problems``.

    An unreadable ground-truth or verified mask is dropped from its sample (and reported); the
    image stays. Returns the new problem lines. ``on_progress(done, total)`` after each image.
    """
    found: list[str] = []
    readable: list[Sample] = []
    total = len(folder.samples)
    for done, sample in enumerate(folder.samples, start=1):
        try:
            check_image(sample.image_path)
        except ImageLoadError as exc:
            found.append(str(exc))
        else:
            readable.append(sample)
            for attribute in ("gt_mask", "verified_mask"):
                mask_path = getattr(sample, attribute)
                if mask_path is not None:
                    try:
                        load_mask(mask_path)
                    except ImageLoadError as exc:
                        found.append(f"{exc} (mask ignored)")
                        setattr(sample, attribute, None)
        if on_progress is not None:
            on_progress(done, total)
    folder.samples[:] = readable
    folder.problems.extend(found)
    return found
