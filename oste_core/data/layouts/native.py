"""The native layout: images in any subfolders plus ``tags.csv`` and an optional ``classes.txt`` (their
format: ``data/folder.py``; without ``classes.txt`` the classes are the sorted unique tags).

Images that have no row in ``tags.csv`` or the tags ``?`` are "not tagged yet": listed in
``LabelledFolder.untagged``, not used for training (``oste tags --suggest`` suggests their tags);
`LabelledFolder.set_tags` turns them into samples; `LabelledFolder.save_tags` writes them as ``?``.
"""
from __future__ import annotations

import os
from pathlib import Path

from oste_core.data.folder import NEVER_SCANNED, TAGS_FILE, LabelledFolder, assign_stems, collision_problems
from oste_core.data.image_io import is_image_file
from oste_core.data.layouts.common import build_samples, csv_tags, listed_classes
from oste_core.data.problems import FolderError


def open_native(root: Path) -> LabelledFolder:
    """The native folder at ``root``: every image found below it, the tagged ones as samples."""
    problems: list[str] = []
    images = _scan_images(root)
    if not images:
        raise FolderError(f"{root}: no images found (supported: .jpg .jpeg .png .bmp .tif .tiff .webp)")
    rows = csv_tags(root, set(images), problems)
    class_names = listed_classes(root, rows, root / TAGS_FILE)
    if class_names is None:
        class_names = sorted({tag for tags in rows.values() for tag in tags})
    stems, collisions = assign_stems(images)
    problems.extend(collision_problems(root, collisions))
    samples = build_samples(root, "native", ((rel, stems[rel], tags) for rel, tags in rows.items()), problems)
    untagged = [rel for rel in images if rel not in rows]
    return LabelledFolder(root, "native", class_names, samples, problems, untagged, stems=stems)


def _scan_images(root: Path) -> list[str]:
    """Relative '/' paths of all images below ``root``, skipping the never-scanned folders; sorted."""
    found: list[str] = []
    for directory, subdirs, files in os.walk(root):
        subdirs[:] = [d for d in subdirs if not d.startswith(".") and d not in NEVER_SCANNED]
        base = Path(directory).relative_to(root).as_posix()
        prefix = "" if base == "." else f"{base}/"
        found.extend(prefix + name for name in files if is_image_file(name) and not name.startswith("."))
    return sorted(found)
