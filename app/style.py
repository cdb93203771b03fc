"""Colours, icons and numpy -> QImage conversions shared by the widgets.

Class colours are the export colours (`oste_core.export.VOC_PALETTE`), so what the user sees in
the editor is what lands in the exported PNGs. Unsure (255) pixels are drawn hatched. The app icon
and the status colours are packaged files under ``resources/`` (read with `importlib.resources`).
"""
from __future__ import annotations

import cv2
import numpy as np
import qtawesome
from PySide6.QtCore import Qt
from PySide6.QtGui import QColor, QIcon, QImage, QPainter, QPixmap

import resources
from oste_core.labels import UNSURE
from oste_core.export import VOC_PALETTE

COLORMAPS = {"JET": cv2.COLORMAP_JET, "Viridis": cv2.COLORMAP_VIRIDIS}

STATUS_COLORS: dict[str, str] = resources.load_json(resources.STATUS_PALETTE)
STATUS_LABELS = {
    "unlabelled": "Unlabelled",
    "pseudo": "Pseudo-label",
    "verified": "Verified",
    "error": "Error",
}

STYLE_SHEET = """
QToolBar { spacing: 2px; padding: 1px; }
QDockWidget::title { padding: 3px 6px; background: palette(midlight); }
QGroupBox { font-weight: bold; margin-top: 8px; }
QGroupBox::title { subcontrol-origin: margin; left: 6px; padding: 0 3px; }
"""


def icon(name: str, color: str | None = None) -> QIcon:
    """A qtawesome icon (e.g. "fa5s.paint-brush")."""
    return qtawesome.icon(name, color=color) if color else qtawesome.icon(name)


def app_icon() -> QIcon:
    """The OSTE Studio icon (``resources/oste-studio.svg`` as a 256 px PNG)."""
    pixmap = QPixmap()
    pixmap.loadFromData(resources.read_bytes(resources.APP_ICON_PNG), "PNG")
    return QIcon(pixmap)


def class_color(index: int) -> QColor:
    """The export colour of class ``index`` (0 background, 1..K, 255 unsure)."""
    r, g, b = (int(v) for v in VOC_PALETTE[int(index)])
    return QColor(r, g, b)


def swatch_icon(color: QColor | str, size: int = 14) -> QIcon:
    """A small filled square with a thin outline, for class and status lists."""
    pixmap = QPixmap(size, size)
    pixmap.fill(Qt.GlobalColor.transparent)
    painter = QPainter(pixmap)
    painter.setPen(QColor(60, 60, 60))
    painter.setBrush(QColor(color))
    painter.drawRect(1, 1, size - 3, size - 3)
    painter.end()
    return QIcon(pixmap)


def status_icon(status: str) -> QIcon:
    """List icon of an image status: a coloured dot, or a warning badge for errors."""
    if status == "error":
        return icon("fa5s.exclamation-triangle", STATUS_COLORS["error"])
    if status == "verified":
        return icon("fa5s.check-circle", STATUS_COLORS["verified"])
    return icon("fa5s.circle", STATUS_COLORS.get(status, STATUS_COLORS["unlabelled"]))


def label_rgba(labels: np.ndarray, background_alpha: int = 0, hatch: int = 6,
               origin: tuple[int, int] = (0, 0), sparse: bool = False) -> np.ndarray:
    """(H, W) class indices -> (H, W, 4) uint8 RGBA: palette colours, background black with
    ``background_alpha`` (0: transparent), unsure (255) hatched white/grey so it is never
    mistaken for a class. ``origin`` (y, x) keeps the hatching aligned when rendering a crop.
    ``sparse``: corrections, where 255 means "no correction" and is transparent."""
    labels = np.asarray(labels, dtype=np.uint8)
    rgba = np.empty(labels.shape + (4,), np.uint8)
    rgba[..., :3] = VOC_PALETTE[labels]
    rgba[..., 3] = np.where(labels == 0, background_alpha, 255)
    unsure = labels == UNSURE
    if sparse:
        rgba[unsure, 3] = 0
    elif unsure.any():
        rows, cols = np.nonzero(unsure)
        stripe = ((rows + cols + origin[0] + origin[1]) // hatch) % 2 == 0
        rgba[rows, cols, :3] = np.where(stripe[:, None], 255, 90).astype(np.uint8)
    return rgba


CORRECTION_BACKGROUND_ALPHA = 150  # background strokes darken the suggestion under them


def corrections_rgba(corrections: np.ndarray, origin: tuple[int, int] = (0, 0)) -> np.ndarray:
    """Sparse corrections -> RGBA: class colours, background darkened, "no correction" (255) clear."""
    return label_rgba(corrections, CORRECTION_BACKGROUND_ALPHA, origin=origin, sparse=True)


def heatmap_rgba(cam: np.ndarray, colormap: str = "JET") -> np.ndarray:
    """(H, W) activation in [0, 1] -> (H, W, 4) uint8 RGBA with a standard colormap."""
    levels = np.clip(np.nan_to_num(np.asarray(cam, np.float32)) * 255.0, 0, 255).astype(np.uint8)
    bgr = cv2.applyColorMap(levels, COLORMAPS[colormap])
    rgba = np.empty(levels.shape + (4,), np.uint8)
    rgba[..., :3] = bgr[..., ::-1]
    rgba[..., 3] = 255
    return rgba


def resize_to(array: np.ndarray, shape: tuple[int, int], nearest: bool) -> np.ndarray:
    """Resize a 2-D map to the displayed image's (H, W) (predictions may be at a smaller size)."""
    if array.shape[:2] == tuple(shape):
        return array
    interpolation = cv2.INTER_NEAREST if nearest else cv2.INTER_LINEAR
    return cv2.resize(array, (shape[1], shape[0]), interpolation=interpolation)


def rgb_image(rgb: np.ndarray) -> QImage:
    """(H, W, 3) uint8 RGB -> QImage (copied, so the array may be freed)."""
    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    h, w, _ = rgb.shape
    return QImage(rgb.data, w, h, 3 * w, QImage.Format.Format_RGB888).copy()


def rgba_image(rgba: np.ndarray) -> QImage:
    """(H, W, 4) uint8 RGBA -> QImage (copied)."""
    rgba = np.ascontiguousarray(rgba, dtype=np.uint8)
    h, w, _ = rgba.shape
    return QImage(rgba.data, w, h, 4 * w, QImage.Format.Format_RGBA8888).copy()
