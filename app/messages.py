"""What the app tells the user: a line in the log and the status bar, a non-blocking error dialog, a question.

Every controller reports through one `Messages`, so they need neither the log nor the window.
"""
from __future__ import annotations

from PySide6.QtWidgets import QMessageBox, QStatusBar, QWidget

from app.log_view import LogView


class Messages:
    """Reports to ``log_view`` and ``status_bar``; dialogs open over ``parent``."""

    def __init__(self, log_view: LogView, status_bar: QStatusBar, parent: QWidget) -> None:
        self._log_view, self._status_bar, self._parent = log_view, status_bar, parent
        self.error_box: QMessageBox | None = None  # the last error dialog

    def log(self, text: str) -> None:
        """A line in the log only (training progress that would flood the status bar)."""
        self._log_view.append_message(text)

    def report(self, text: str, error: bool = False) -> None:
        """A line in the log and the status bar."""
        self._log_view.append_message(text, error=error)
        self._status_bar.showMessage(text, 8000)

    def show_error(self, title: str, text: str) -> None:
        """A non-blocking error dialog (the app stays usable)."""
        self.report(text, error=True)
        self.error_box = QMessageBox(QMessageBox.Icon.Critical, title, text, QMessageBox.StandardButton.Ok,
                                     self._parent)
        self.error_box.open()

    def ask(self, title: str, text: str, buttons: QMessageBox.StandardButton,
            default: QMessageBox.StandardButton) -> QMessageBox.StandardButton:
        """A modal question; the button the user chose."""
        return QMessageBox.question(self._parent, title, text, buttons, default)
