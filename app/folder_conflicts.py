"""The answers to a folder another program writes too: open read-only when another session holds
the folder's lock (or the folder is not writable), and reload or keep one's own tags when ``tags.csv`` was
changed on disk (`app.project.TagsChangedOnDisk`)."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from PySide6.QtCore import QObject, Signal
from PySide6.QtWidgets import QMessageBox, QWidget

from app.messages import Messages
from app.project import Project
from oste_core.utils.locks import FolderLockedError, describe_holder

Button = QMessageBox.StandardButton


def choose(parent: QWidget, title: str, text: str, labels: dict[Button, str], default: Button,
           escape: Button | None = None) -> Button:
    """A question whose buttons say what they do (``labels``: standard button -> its text); the button clicked
    (``escape``, else ``default``, when the dialog is closed)."""
    box = QMessageBox(QMessageBox.Icon.Question, title, text, Button.NoButton, parent)
    for button, label in labels.items():
        box.addButton(button).setText(label)
    box.setDefaultButton(default)
    box.setEscapeButton(box.button(escape or default))
    return Button(box.exec())


class FolderConflicts(QObject):
    """Opens the project (read-only when needed) and resolves tags changed on disk; asks over ``parent``."""

    tagsReloaded = Signal()  # the user chose the tags on disk: the lists show them again

    def __init__(self, project: Project, messages: Messages, parent: QWidget) -> None:
        super().__init__(parent)
        self._project, self._messages, self._parent = project, messages, parent

    def open_project(self, path: str | Path) -> bool:
        """Open ``path`` with its lock, or read-only if the user agrees; False when they cancel."""
        project = self._project
        try:
            project.open(path)
            return True
        except FolderLockedError as exc:
            why = (f"{exc.folder} is being written by {describe_holder(exc.holder)}.\n\n"
                   "Open it read-only? You can look at images, masks and suggestions, but tags and masks are not saved.")
        except PermissionError as exc:
            why = f"{path}: this folder cannot be written ({exc.strerror}).\n\nOpen it read-only?"
        answer = choose(self._parent, "Folder in use", why, {Button.Open: "Open read-only", Button.Cancel: "Cancel"},
                        Button.Open, Button.Cancel)
        if answer != Button.Open:
            return False
        project.open(path, read_only=True)
        return True

    def tags_changed(self, retry: Callable[[], None]) -> None:
        """``tags.csv`` changed on disk before a write: reload it, or keep this session's tags and ``retry``."""
        project, report = self._project, self._messages.report
        path = project.folder.tags_path
        answer = choose(self._parent, "tags.csv changed on disk",
                        f"{path} was changed by another program since OSTE Studio read it.\n\n"
                        "Reload it: the tags on disk are shown, and your last change is not applied.\n"
                        "Keep mine: tags.csv is written with the tags shown here (the other changes are lost).",
                        {Button.Yes: "Reload from disk", Button.No: "Keep mine"}, Button.Yes)
        if answer == Button.No:
            project.keep_own_tags()
            report(f"{path}: changed on disk; kept the tags of this session")
            retry()
            return
        project.reload_tags()
        self.tagsReloaded.emit()
        report(f"{path}: changed on disk; reloaded")
