"""The log panel: timestamped training/inference/export messages, errors in red."""
from __future__ import annotations

import html
import time

from PySide6.QtGui import QFontDatabase
from PySide6.QtWidgets import QPlainTextEdit, QWidget

MAX_LINES = 5000


class LogView(QPlainTextEdit):
    """Read-only, bounded log."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setReadOnly(True)
        self.setMaximumBlockCount(MAX_LINES)
        self.setFont(QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont))
        self.setPlaceholderText("Messages from training, inference and export appear here.")

    def append_message(self, text: str, error: bool = False) -> None:
        """Add one line, prefixed with the time of day."""
        line = f"{time.strftime('%H:%M:%S')}  {text}"
        if error:
            self.appendHtml(f'<span style="color:#c62828">{html.escape(line)}</span>')
        else:
            self.appendPlainText(line)
        self.verticalScrollBar().setValue(self.verticalScrollBar().maximum())
