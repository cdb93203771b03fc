"""OSTE Studio's packaged files: the app icon, the ``.desktop`` entry and the palettes the GUI loads.

| file | what |
| --- | --- |
| ``oste-studio.svg`` | the app icon (vector) |
| ``oste-studio.png`` | the app icon, 256 px (the window icon; also for desktop menus) |
| ``oste-studio.desktop`` | a freedesktop.org launcher (``Exec=oste-gui``, ``Icon=oste-studio``) |
| ``palettes/status.json`` | the colours of the image list's status dots (unlabelled, pseudo, verified, error) |

The class colours are not here: they are the VOC palette, computed in `oste_core.export.palette` so
that the editor and the exported PNGs can never disagree.

Files are read through `importlib.resources`, so they are found the same way in a source checkout,
an editable install and an installed wheel (``pyproject.toml`` lists them as package data).
"""
from __future__ import annotations

import json
from importlib.resources import files
from importlib.resources.abc import Traversable
from typing import Any

APP_ICON_SVG = "oste-studio.svg"
APP_ICON_PNG = "oste-studio.png"
DESKTOP_FILE = "oste-studio.desktop"
STATUS_PALETTE = "palettes/status.json"


def resource(name: str) -> Traversable:
    """The packaged file ``name`` (a path relative to this package, '/'-separated)."""
    node = files(__name__)
    for part in name.split("/"):
        node = node.joinpath(part)
    if not node.is_file():
        raise FileNotFoundError(f"OSTE Studio resource {name!r} is missing from the installed package")
    return node


def read_bytes(name: str) -> bytes:
    return resource(name).read_bytes()


def load_json(name: str) -> Any:
    return json.loads(resource(name).read_text(encoding="utf-8"))
