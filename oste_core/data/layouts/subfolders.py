"""The subfolders layout: one subfolder per class, images directly inside, one tag per image (the
subfolder's name). Without ``classes.txt`` the classes are the sorted subfolder names; with it, it must list
every one."""
from __future__ import annotations

import os
from pathlib import Path

from oste_core.data.folder import (CLASSES_FILE, NEVER_SCANNED, LabelledFolder, assign_stems, collision_problems,
                                   read_classes)
from oste_core.data.image_io import is_image_file
from oste_core.data.layouts.common import build_samples
from oste_core.data.problems import FolderError


def class_subfolders(root: Path) -> dict[str, list[str]]:
    """Subfolder name -> names of the images directly inside (folders without images are left out)."""
    found: dict[str, list[str]] = {}
    for entry in sorted(os.scandir(root), key=lambda e: e.name):
        if entry.is_dir() and not entry.name.startswith(".") and entry.name not in NEVER_SCANNED:
            names = sorted(e.name for e in os.scandir(entry.path) if e.is_file() and is_image_file(e.name))
            if names:
                found[entry.name] = names
    return found


def open_subfolders(root: Path, subfolders: dict[str, list[str]]) -> LabelledFolder:
    """The folder at ``root`` whose ``class_subfolders`` are ``subfolders``."""
    problems: list[str] = []
    classes_path = root / CLASSES_FILE
    if classes_path.is_file():
        class_names = read_classes(classes_path)
        missing = sorted(set(subfolders) - set(class_names))
        if missing:
            raise FolderError(
                f"{classes_path}: class subfolders {', '.join(missing)} are not listed (add them to {CLASSES_FILE})"
            )
    else:
        class_names = sorted(subfolders)
    rels = [f"{name}/{image}" for name, images in subfolders.items() for image in images]
    stems, collisions = assign_stems(rels)
    problems.extend(collision_problems(root, collisions))
    entries = ((rel, stems[rel], [rel.partition("/")[0]]) for rel in rels)
    samples = build_samples(root, "subfolders", entries, problems)
    return LabelledFolder(root, "subfolders", class_names, samples, problems, stems=stems)
