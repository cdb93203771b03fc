"""What the layouts read alike: ``tags.csv``'s rows of the images found, ``classes.txt``'s classes, and the
samples built from (rel, stem, tags) entries."""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

from oste_core.data.folder import CLASSES_FILE, TAGS_FILE, MaskFinder, Sample, read_classes, read_tags_csv
from oste_core.data.problems import MISSING_FILE, STEM_COLLISION, FolderError, Problem


def csv_tags(root: Path, images: set[str], problems: list[str]) -> dict[str, list[str]]:
    """rel -> tags of ``tags.csv``'s rows whose image is one of ``images`` (the other rows and the file's bad
    lines are reported in ``problems``); empty without ``tags.csv``."""
    tags_path = root / TAGS_FILE
    if not tags_path.is_file():
        return {}
    rows, found = read_tags_csv(tags_path)
    problems.extend(found)
    return _rows_for_images(rows, images, tags_path, problems)


def listed_classes(root: Path, tags_by_source: dict[str, list[str]], tags_source: Path) -> list[str] | None:
    """``classes.txt``'s classes, or None without the file; FolderError listing every tag (of
    ``tags_by_source``, read from ``tags_source``) that is not one of them."""
    classes_path = root / CLASSES_FILE
    if not classes_path.is_file():
        return None
    class_names = read_classes(classes_path)
    known = set(class_names)
    unknown = sorted({tag for tags in tags_by_source.values() for tag in tags if tag not in known})
    if unknown:
        raise FolderError(
            f"{tags_source}: tags name classes that are not in {classes_path}: {', '.join(unknown)} "
            f"(add them to {classes_path.name} or fix the tags)"
        )
    return class_names


def build_samples(
    root: Path, layout: str, entries: Iterable[tuple[str, str, list[str]]], problems: list[str]
) -> list[Sample]:
    """Samples from (rel, stem, tags); a repeated stem is reported and skipped, and so is a
    ``masks/`` folder that matches none of them (native and subfolder layouts)."""
    finder = MaskFinder(root, layout)
    samples: list[Sample] = []
    seen: dict[str, str] = {}
    for rel, stem, tags in entries:
        if stem in seen:
            problems.append(Problem(f"{root / rel}: same stem {stem!r} as {seen[stem]}; rename one of them (skipped)",
                                    STEM_COLLISION))
            continue
        seen[stem] = rel
        samples.append(finder.sample(root, rel, stem, tags))
    if layout != "voc":
        problems.extend(finder.unmatched_masks(root, samples))
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
            problems.append(Problem(f"{tags_path}: row for {rel}: image not found (skipped)", MISSING_FILE))
    return kept
