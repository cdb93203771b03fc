"""The status bar: messages on the left; the pixel under the cursor, the zoom, the device and the CRF backend
on the right."""
from __future__ import annotations

from PySide6.QtWidgets import QLabel, QStatusBar, QWidget

from oste_core.editing import MaskDocument
from oste_core.models.modules.crf import make_crf
from oste_core.utils.device import device_description, pick_device


class StatusBar(QStatusBar):
    """Says which device and CRF backend this machine uses, so a slow session explains itself."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        device = pick_device("auto")
        try:
            crf_backend = make_crf("auto", device=device).backend
        except Exception as exc:  # noqa: BLE001 - the status bar says what is wrong instead
            crf_backend = f"unavailable ({exc})"
        self.device_label = QLabel(f"Device: {device_description(device)}")
        self.crf_label = QLabel(f"CRF: {crf_backend}")
        self.zoom_label = QLabel()
        self.cursor_label = QLabel()
        for label in (self.cursor_label, self.zoom_label, self.device_label, self.crf_label):
            self.addPermanentWidget(label)

    def show_zoom(self, scale: float) -> None:
        """The canvas zoom, as a percentage."""
        self.zoom_label.setText(f"{scale:.0%}")

    def show_cursor(self, x: int, y: int, doc: MaskDocument | None) -> None:
        """The pixel under the cursor and its label in ``doc`` (nothing outside the image)."""
        if doc is not None and 0 <= y < doc.shape[0] and 0 <= x < doc.shape[1]:
            self.cursor_label.setText(f"x {x}  y {y}  label {doc.mask[y, x]}")
        else:
            self.cursor_label.clear()
