"""The image's tags: tick classes from the project's class list, or add a new class.

Each class shows its export colour (VOC palette). Changes are reported with `tagsEdited`; the
project saves them to ``tags.csv`` right away.
"""
from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from app.style import class_color, icon, swatch_icon


class TagsPanel(QWidget):
    """Checkable class list for the current image plus an "add class" row."""

    tagsEdited = Signal(list)  # the image's new tag names, in class order
    classAdded = Signal(str)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._title = QLabel("No image")
        self._title.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self._list = QListWidget()
        self._list.setToolTip("Tick the classes present in this image (saved to tags.csv right away)")
        self._list.itemChanged.connect(self._on_item_changed)
        self._new_class = QLineEdit()
        self._new_class.setPlaceholderText("new class name")
        self._new_class.returnPressed.connect(self._on_add)
        self._add_button = QPushButton(icon("fa5s.plus"), "Add")
        self._add_button.setToolTip("Add a class to the project (it gets the next palette colour)")
        self._add_button.clicked.connect(self._on_add)
        add_row = QHBoxLayout()
        add_row.addWidget(self._new_class, 1)
        add_row.addWidget(self._add_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addWidget(self._title)
        layout.addWidget(self._list, 1)
        layout.addLayout(add_row)
        self._updating = False
        self.setEnabled(False)

    def set_classes(self, class_names: list[str]) -> None:
        """The project's foreground classes (index 1..K), keeping the ticks of those still present."""
        ticked = set(self.tags())
        self._updating = True
        self._list.clear()
        for index, name in enumerate(class_names, start=1):
            item = QListWidgetItem(swatch_icon(class_color(index)), name)
            item.setFlags(Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsUserCheckable | Qt.ItemFlag.ItemIsSelectable)
            item.setCheckState(Qt.CheckState.Checked if name in ticked else Qt.CheckState.Unchecked)
            self._list.addItem(item)
        self._updating = False

    def set_image(self, stem: str | None, tags: list[str]) -> None:
        """Show the tags of image ``stem`` (None: nothing selected)."""
        self.setEnabled(stem is not None)
        self._title.setText(f"Tags of <b>{stem}</b>" if stem else "No image")
        self._updating = True
        wanted = set(tags)
        for row in range(self._list.count()):
            item = self._list.item(row)
            item.setCheckState(Qt.CheckState.Checked if item.text() in wanted else Qt.CheckState.Unchecked)
        self._updating = False

    def tags(self) -> list[str]:
        return [self._list.item(r).text() for r in range(self._list.count())
                if self._list.item(r).checkState() == Qt.CheckState.Checked]

    def set_tag_checked(self, name: str, checked: bool) -> None:
        """Tick or untick one class, as a click would."""
        for item in self._list.findItems(name, Qt.MatchFlag.MatchExactly):
            item.setCheckState(Qt.CheckState.Checked if checked else Qt.CheckState.Unchecked)

    def add_class(self, name: str) -> None:
        """Request a new class, as typing it and pressing Add would."""
        self._new_class.setText(name)
        self._on_add()

    def _on_item_changed(self, _item: QListWidgetItem) -> None:
        if not self._updating:
            self.tagsEdited.emit(self.tags())

    def _on_add(self) -> None:
        name = self._new_class.text().strip()
        if name:
            self._new_class.clear()
            self.classAdded.emit(name)
