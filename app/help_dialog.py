"""Help > Keyboard shortcuts and Help > Layer legend: one dialog with two tabs.

The shortcut sheet is built from the window's actions, so it always lists the keys that really
work; the legend draws its swatches with the same renderer as the canvas (`label_rgba`).
"""
from __future__ import annotations

import numpy as np
from PySide6.QtCore import Qt
from PySide6.QtGui import QAction, QKeySequence, QPixmap
from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QGridLayout,
    QHeaderView,
    QLabel,
    QScrollArea,
    QTableWidget,
    QTableWidgetItem,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from app.style import corrections_rgba, heatmap_rgba, label_rgba, rgba_image
from oste_core.labels import BACKGROUND, UNSURE

MOUSE_HINTS: list[tuple[str, str]] = [
    ("Mouse wheel", "Zoom around the cursor"),
    ("Middle drag, or Space + drag", "Pan"),
    ("Enter / double-click", "Close the polygon"),
    ("Backspace / Esc", "Remove the last polygon vertex / cancel the polygon"),
    ("Ctrl+Z in the Tags panel", "Undo the last tag change of this image"),
]
SWATCH = 28
SHORTCUTS_TAB, LEGEND_TAB = 0, 1


def shortcut_rows(actions: list[QAction]) -> list[tuple[str, str]]:
    """(keys, what it does) for every action with a shortcut, in the given order, then mouse hints."""
    rows: list[tuple[str, str]] = []
    for action in actions:
        keys = ", ".join(k.toString(QKeySequence.SequenceFormat.NativeText) for k in action.shortcuts() if not k.isEmpty())
        if keys:
            rows.append((keys, action.text().replace("&", "").rstrip(".")))
    return rows + MOUSE_HINTS


def _swatch(rgba: np.ndarray, backdrop: tuple[int, int, int] = (128, 128, 128)) -> QPixmap:
    """An RGBA patch composited over a grey backdrop, as the canvas shows it over an image."""
    alpha = rgba[..., 3:4].astype(np.float32) / 255.0
    rgb = rgba[..., :3] * alpha + np.array(backdrop, np.float32) * (1.0 - alpha)
    out = np.concatenate([rgb.astype(np.uint8), np.full(alpha.shape, 255, np.uint8)], axis=2)
    return QPixmap.fromImage(rgba_image(out))


def legend_rows(class_names: list[str]) -> list[tuple[np.ndarray, str]]:
    """(RGBA swatch, explanation) for each thing the overlays draw."""
    patch = np.zeros((SWATCH, SWATCH), np.uint8)
    rows = [
        (label_rgba(patch + UNSURE), "Hatching (white/grey stripes): unsure (255), ignored by training and "
                                     "left for you to decide"),
        (label_rgba(patch + BACKGROUND, background_alpha=150),
         "Darkened: background (0) in the suggestion, pseudo-label, segmentation and ground truth layers "
         "(in your edited mask, background is left clear)"),
        (corrections_rgba(np.where(np.eye(SWATCH, dtype=bool) | np.eye(SWATCH, dtype=bool)[::-1], 1, UNSURE)
                          .astype(np.uint8)),
         "Corrections (on an image that is not verified): your strokes in class colours over the suggestion, "
         "background strokes darkened, the rest clear (no correction); layer 9 shows them alone"),
        (heatmap_rgba(np.tile(np.linspace(0, 1, SWATCH, dtype=np.float32), (SWATCH, 1))),
         "CAM heatmap: blue = no activation, red = strongest activation of the chosen class"),
    ]
    names = class_names or ["(class 1)", "(class 2)", "(class 3)"]
    for index, name in enumerate(names, start=1):
        rows.append((label_rgba(patch + index), f"{name}: class {index} (the colour it gets in exported masks)"))
    return rows


class HelpDialog(QDialog):
    """Shortcut sheet and layer legend (non-modal, so it can stay open while working)."""

    def __init__(self, actions: list[QAction], class_names: list[str], parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("OSTE Studio help")
        self.tabs = QTabWidget()
        self.shortcuts = self._shortcut_table(shortcut_rows(actions))
        self.tabs.addTab(self.shortcuts, "Keyboard shortcuts")
        self.legend = QWidget()
        self._legend_grid = QGridLayout(self.legend)
        self.set_classes(class_names)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setWidget(self.legend)
        self.tabs.addTab(scroll, "Layer legend")
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(self.tabs)
        layout.addWidget(buttons)
        self.resize(620, 520)

    @staticmethod
    def _shortcut_table(rows: list[tuple[str, str]]) -> QTableWidget:
        table = QTableWidget(len(rows), 2)
        table.setHorizontalHeaderLabels(["Keys", "Action"])
        table.verticalHeader().hide()
        table.verticalHeader().setDefaultSectionSize(table.fontMetrics().height() + 6)
        table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        table.setSelectionMode(QTableWidget.SelectionMode.NoSelection)
        for row, (keys, text) in enumerate(rows):
            table.setItem(row, 0, QTableWidgetItem(keys))
            table.setItem(row, 1, QTableWidgetItem(text))
        header = table.horizontalHeader()
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(1, QHeaderView.ResizeMode.Stretch)
        return table

    def set_classes(self, class_names: list[str]) -> None:
        """Redraw the legend for the open project's classes."""
        while self._legend_grid.count():
            old = self._legend_grid.takeAt(0).widget()
            old.hide()
            old.deleteLater()
        for row, (rgba, text) in enumerate(legend_rows(class_names)):
            swatch = QLabel()
            swatch.setPixmap(_swatch(rgba))
            label = QLabel(text)
            label.setWordWrap(True)
            self._legend_grid.addWidget(swatch, row, 0, Qt.AlignmentFlag.AlignTop)
            self._legend_grid.addWidget(label, row, 1)
        self._legend_grid.setColumnStretch(1, 1)
        self._legend_grid.setRowStretch(self._legend_grid.rowCount(), 1)

    def show_tab(self, tab: int) -> None:
        """Open (or raise) the dialog on the shortcut sheet or the legend."""
        self.tabs.setCurrentIndex(tab)
        self.show()
        self.raise_()
        self.activateWindow()
