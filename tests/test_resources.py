"""resources/: the packaged app icon, .desktop file and palettes are found through the installed package."""
from __future__ import annotations

import configparser
import fnmatch
import os
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

import resources

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

ROOT = Path(__file__).resolve().parents[1]


def test_loader_finds_every_resource():
    for name in (resources.APP_ICON_SVG, resources.APP_ICON_PNG, resources.DESKTOP_FILE, resources.STATUS_PALETTE):
        assert resources.resource(name).is_file(), name
    with pytest.raises(FileNotFoundError, match="missing"):
        resources.resource("no-such-file.png")


def test_app_icon_is_a_256_px_png():
    image = cv2.imdecode(np.frombuffer(resources.read_bytes(resources.APP_ICON_PNG), np.uint8), cv2.IMREAD_UNCHANGED)
    assert image is not None and image.shape[:2] == (256, 256)
    assert b"<svg" in resources.read_bytes(resources.APP_ICON_SVG)


def test_desktop_entry_starts_the_gui_with_the_icon():
    parser = configparser.ConfigParser(interpolation=None)
    parser.optionxform = str
    parser.read_string(resources.resource(resources.DESKTOP_FILE).read_text(encoding="utf-8"))
    entry = parser["Desktop Entry"]
    assert entry["Type"] == "Application"
    assert entry["Exec"].split()[0] == "oste-gui"
    assert entry["Icon"] == Path(resources.APP_ICON_PNG).stem == "oste-studio"


def test_status_palette_covers_every_status():
    colours = resources.load_json(resources.STATUS_PALETTE)
    assert set(colours) == {"unlabelled", "pseudo", "verified", "error"}
    assert all(value.startswith("#") and len(value) == 7 for value in colours.values())


@pytest.mark.skipif(sys.version_info < (3, 11), reason="tomllib is Python 3.11+")
def test_pyproject_packages_every_resource_file():
    """Every file under resources/ matches a package-data pattern, so `pip install` ships it."""
    import tomllib

    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]
    assert "resources" in setuptools["packages"]["find"]["include"]
    patterns = setuptools["package-data"]["resources"]
    folder = ROOT / "resources"
    files = [p.relative_to(folder).as_posix() for p in folder.rglob("*")
             if p.is_file() and p.suffix != ".py" and "__pycache__" not in p.parts]
    assert files
    unpackaged = [f for f in files if not any(fnmatch.fnmatch(f, pattern) for pattern in patterns)]
    assert not unpackaged, f"add to [tool.setuptools.package-data]: {unpackaged}"


def test_window_icon_and_status_colours_load(qapp):
    from app.style import STATUS_COLORS, app_icon

    icon = app_icon()
    assert not icon.isNull()
    assert icon.availableSizes() and icon.availableSizes()[0].width() == 256
    assert STATUS_COLORS["verified"] == resources.load_json(resources.STATUS_PALETTE)["verified"]
