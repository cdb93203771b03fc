"""The status-bar indicator of the suggestion refresh after a correction: "refreshing suggestions 37/180"."""
from __future__ import annotations

from PySide6.QtWidgets import QHBoxLayout, QLabel, QProgressBar, QWidget


class RefreshIndicator(QWidget):
    """A short text and a small bar; hidden while no refresh runs."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self._label = QLabel()
        self._bar = QProgressBar()
        self._bar.setTextVisible(False)
        self._bar.setMaximumWidth(120)
        self._bar.setMaximumHeight(10)
        layout.addWidget(self._label)
        layout.addWidget(self._bar)
        self.setVisible(False)

    def show_progress(self, done: int, total: int) -> None:
        """``done`` of ``total`` suggestions refreshed (0 while the pixel classifier is refitted)."""
        self._label.setText(f"refreshing suggestions {done}/{total}" if done else "learning from your corrections ...")
        self._bar.setRange(0, max(total, 1) if done else 0)
        self._bar.setValue(done)
        self.setVisible(True)

    def text(self) -> str:
        return self._label.text() if self.isVisible() else ""

    def finish(self) -> None:
        self.setVisible(False)
