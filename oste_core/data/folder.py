"""A labelled folder as every layout gives it (`LabelledFolder`, `Sample`) and the files beside its images.

The layouts and how each is read: ``oste_core/data/layouts``. For every layout ``classes.txt`` (one class
per line, line order = label index 1..K) wins when present, and once ``tags.csv`` exists (written by
`LabelledFolder.save_tags`, which also writes ``classes.txt``) it is the source of the tags: columns
``image,tags``, ``image`` the path relative to the folder with '/' separators, ``tags`` class names separated
by ';'; empty tags = an image showing background only, ``?`` = not tagged yet. Optional ``masks/<stem>.png``
are ground-truth masks (evaluation) and ``verified/<stem>.png`` the masks a user verified in the editor,
``corrections/<stem>.png`` their sparse corrections (255 = no label). The folders ``masks``, ``verified``,
``corrections``, ``runs``, ``exports`` and any folder whose name starts with '.' are never scanned for images.

Stems are unique per folder and name the mask files. An image's stem is its file name without
the extension (``images/a/img.jpg`` -> ``img``), at any depth, so the common ``images/`` +
``masks/`` layout works as is. Only images whose file stems collide (compared without case,
as on Windows and macOS) use their path stem instead, the relative path with '/' replaced by
'__' (``a/b/img.jpg`` -> ``a__b__img``), and the collision is reported. Masks saved under the
path stem of an image whose stem is now its file stem are still read (the file stem wins when
both exist); new verified masks are written under the stem.

Problems that do not stop the folder from being used (an unreadable annotation, a row naming a
missing image, colliding stems, a ``masks/`` folder that matches no image) are collected in
``LabelledFolder.problems`` as ``"path: reason"`` lines (``problems.py``); `validate_images` adds undecodable
images there. Problems that make the folder unusable raise `FolderError`.
"""
from __future__ import annotations

import csv
import io
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from oste_core.data.image_io import ImageLoadError, check_image, load_mask
from oste_core.data.problems import (BAD_ROW, DUPLICATE_ROW, STEM_COLLISION, UNMATCHED_MASKS, UNREADABLE_IMAGE,
                                     UNREADABLE_MASK, FolderError, Problem)
from oste_core.utils.io import atomic_write_text

TAGS_FILE = "tags.csv"
UNTAGGED_MARK = "?"  # the tags of an image that is not tagged yet (no row means the same)
CLASSES_FILE = "classes.txt"
MASKS_DIR = "masks"
VERIFIED_DIR = "verified"
CORRECTIONS_DIR = "corrections"  # sparse corrections: oste_core/suggest/corrections.py
NEVER_SCANNED = frozenset({MASKS_DIR, VERIFIED_DIR, CORRECTIONS_DIR, "runs", "exports"})
RESERVED_CLASS_NAMES = frozenset({"background", "_background_", "__ignore__"})


@dataclass
class Sample:
    """One tagged image of a labelled folder."""

    image_path: Path
    rel: str  # path relative to the folder root, '/' separators
    stem: str  # unique in the folder, names its mask files (see the module docstring)
    tags: list[str] = field(default_factory=list)
    gt_mask: Path | None = None
    verified_mask: Path | None = None


def file_stem(rel: str) -> str:
    """The file name without its extension: ``a/b/img.jpg`` -> ``img``."""
    name = rel.rpartition("/")[2]
    return name.rsplit(".", 1)[0] if "." in name else name


def stem_for(rel: str) -> str:
    """Path stem of a relative image path, the stem of images whose file stems collide:
    ``a/b/img.jpg`` -> ``a__b__img``, ``img.jpg`` -> ``img``."""
    parent = rel.rpartition("/")[0]
    return f"{parent.replace('/', '__')}__{file_stem(rel)}" if parent else file_stem(rel)


def assign_stems(rels: Iterable[str]) -> tuple[dict[str, str], list[list[str]]]:
    """rel -> stem for all images of a folder, and the groups of rels whose file stems collide.

    The stem is the file stem unless another image has the same one (ignoring case: masks of
    ``a/X.jpg`` and ``b/x.jpg`` would be one file on Windows and macOS); then the path stem.
    """
    groups: dict[str, list[str]] = {}
    for rel in rels:
        groups.setdefault(file_stem(rel).casefold(), []).append(rel)
    stems: dict[str, str] = {}
    collisions: list[list[str]] = []
    for group in groups.values():
        if len(group) == 1:
            stems[group[0]] = file_stem(group[0])
        else:
            collisions.append(group)
            stems.update((rel, stem_for(rel)) for rel in group)
    return stems, collisions


def collision_problems(root: Path, collisions: list[list[str]]) -> list[Problem]:
    """One line per image whose file stem collides: which images, and the mask names used instead.

    Images whose path stems are the same too (``img.jpg`` and ``img.png``) are left to
    `layouts.common.build_samples`, which skips and reports the second one.
    """
    problems: list[Problem] = []
    for group in collisions:
        path_stems = Counter(stem_for(rel) for rel in group)
        for rel in (rel for rel in group if path_stems[stem_for(rel)] == 1):
            others = ", ".join(other for other in group if other != rel)
            problems.append(Problem(
                f"{root / rel}: same file name stem as {others}; its masks are named after its path: "
                f"{MASKS_DIR}/{stem_for(rel)}.png, {VERIFIED_DIR}/{stem_for(rel)}.png", STEM_COLLISION))
    return problems


def clean_tags(tags: Iterable[str]) -> list[str]:
    """Strip, drop empty names and duplicates, keep the order."""
    cleaned: list[str] = []
    for tag in tags:
        tag = tag.strip()
        if tag and tag not in cleaned:
            cleaned.append(tag)
    return cleaned


def _check_class_name(name: str) -> str:
    name = name.strip()
    if not name or name == UNTAGGED_MARK or any(ch in name for ch in ";\n\r"):
        raise ValueError(f"invalid class name {name!r}: it must be non-empty, not '?' (not tagged yet) and contain no ';' or line break")
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
    stems: dict[str, str] = field(default_factory=dict)  # rel -> stem of every image, tagged or not

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
        """Where the editor stores the verified mask of ``sample`` (then set ``sample.verified_mask``).

        Always the stem's name; ``sample.verified_mask`` may still be an older file saved under
        the path stem, which this name then replaces.
        """
        return self.root / VERIFIED_DIR / f"{sample.stem}.png"

    def stem_of(self, rel: str) -> str:
        """The stem of any image of the folder, tagged or not, from its relative path."""
        try:
            return self.stems[rel]
        except KeyError:
            raise KeyError(f"{self.root}: no image {rel!r}") from None

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
        tags = [_check_class_name(tag) for tag in clean_tags(tags)]
        try:
            sample = self.find(stem_or_rel)
        except KeyError:
            if stem_or_rel not in self.untagged:
                raise
            self.untagged.remove(stem_or_rel)
            stem = self.stem_of(stem_or_rel)
            sample = MaskFinder(self.root, self.layout).sample(self.root, stem_or_rel, stem, [])
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
            kept = {rel: tags for rel, tags in read_tags_csv(self.tags_path)[0].items() if rel not in current}
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["image", "tags"])
        rows = [(sample.rel, sample.tags) for sample in self.samples] + list(kept.items())
        writer.writerows([rel, ";".join(tags)] for rel, tags in rows)
        writer.writerows([rel, UNTAGGED_MARK] for rel in self.untagged if rel not in kept)
        if not self.classes_path.is_file() or read_classes(self.classes_path) != self.class_names:
            atomic_write_text(self.classes_path, "".join(f"{name}\n" for name in self.class_names))
        return atomic_write_text(self.tags_path, buffer.getvalue())


class MaskFinder:
    """Finds ground-truth and verified masks, listing each mask folder once.

    A mask is ``<stem>.png``, or for a nested image ``<path stem>.png``, the name older versions
    gave it (read when the stem's own file is absent).
    """

    def __init__(self, root: Path, layout: str) -> None:
        gt_dirs = [root / "SegmentationClass", root / MASKS_DIR] if layout == "voc" else [root / MASKS_DIR]
        self._gt = [(d, _png_names(d)) for d in gt_dirs]
        self._verified_dir = root / VERIFIED_DIR
        self._verified = _png_names(self._verified_dir)
        self._layout = layout

    def _names(self, rel: str, stem: str) -> list[str]:
        old = stem_for(rel)
        return [f"{stem}.png"] + ([f"{old}.png"] if self._layout != "voc" and old != stem else [])

    def sample(self, root: Path, rel: str, stem: str, tags: list[str]) -> Sample:
        names = self._names(rel, stem)
        gt = next((d / name for name in names for d, found in self._gt if name in found), None)
        verified = next((self._verified_dir / name for name in names if name in self._verified), None)
        return Sample(root / rel, rel, stem, tags, gt, verified)

    def unmatched_masks(self, root: Path, samples: list[Sample]) -> list[Problem]:
        """A warning when ``masks/`` holds PNG files but none of them is the mask of a sample."""
        masks_dir, names = self._gt[-1]
        if not names or not samples or any(s.gt_mask is not None for s in samples):
            return []
        example = samples[0]
        return [Problem(
            f"{masks_dir}: has 0 of the {len(samples)} expected mask files (one per image, named "
            f"after the image file without its extension): for {example.rel} it expects "
            f"{MASKS_DIR}/{example.stem}.png, but holds files such as {min(names)}", UNMATCHED_MASKS)]


def _png_names(directory: Path) -> set[str]:
    try:
        return {e.name for e in os.scandir(directory) if e.name.lower().endswith(".png") and e.is_file()}
    except (FileNotFoundError, NotADirectoryError):
        return set()


def read_classes(path: Path) -> list[str]:
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


def read_tags_csv(path: Path) -> tuple[dict[str, list[str]], list[str]]:
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
        tags = clean_tags(row[tags_col].split(";")) if tags_col < len(row) else []
        if not rel or rel.startswith("/") or ".." in rel.split("/") or rel[1:2] == ":":
            problems.append(Problem(f"{path}: line {line_number}: image path {rel!r} must be relative to the folder; "
                                    "row skipped", BAD_ROW))
            continue
        if tags == [UNTAGGED_MARK]:
            rows.pop(rel, None)
            continue
        if rel in rows:
            problems.append(Problem(f"{path}: line {line_number}: {rel} is listed twice; the later row is used",
                                    DUPLICATE_ROW))
        rows[rel] = tags
    return rows, problems


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
            found.append(Problem(str(exc), UNREADABLE_IMAGE))
        else:
            readable.append(sample)
            for attribute in ("gt_mask", "verified_mask"):
                mask_path = getattr(sample, attribute)
                if mask_path is not None:
                    try:
                        load_mask(mask_path)
                    except ImageLoadError as exc:
                        found.append(Problem(f"{exc} (mask ignored)", UNREADABLE_MASK))
                        setattr(sample, attribute, None)
        if on_progress is not None:
            on_progress(done, total)
    folder.samples[:] = readable
    folder.problems.extend(found)
    return found
