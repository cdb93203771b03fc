"""The labelled-folder layouts `open_folder` recognises (`detect_layout`), one module each:

* **native** (``native.py``): images in any subfolders plus ``tags.csv`` and an optional ``classes.txt``;
* **voc** (``voc.py``): PASCAL VOC, ``JPEGImages/`` and ``Annotations/`` (``split`` selects an image set);
* **subfolders** (``subfolders.py``): one subfolder per class, images directly inside.

``common.py`` reads what they share (``tags.csv``, ``classes.txt``, the samples' masks); the folder they give,
and the files beside the images: ``data/folder.py``.
"""
from __future__ import annotations

import os
from pathlib import Path

from oste_core.data.folder import TAGS_FILE, LabelledFolder
from oste_core.data.image_io import is_image_file
from oste_core.data.layouts.native import open_native
from oste_core.data.layouts.subfolders import class_subfolders, open_subfolders
from oste_core.data.layouts.voc import open_voc
from oste_core.data.problems import FolderError


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
    return "subfolders" if not top_level_images and class_subfolders(root) else "native"


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
        return open_voc(root, split)
    if layout == "subfolders":
        return open_subfolders(root, class_subfolders(root))
    return open_native(root)
