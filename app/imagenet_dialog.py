"""What ImageNet calls a class: a searchable list of the 1 000 ImageNet classes, the class's prior ticked.

Opens on the classes the class's name matches (`oste_core.data.priors.class_priors`: priors.yaml, the VOC
table or WordNet) and says where they come from; OK writes the ticked classes to ``priors.yaml`` (none
ticked: no prior). The choice takes effect at the next training.
"""
from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (QDialog, QDialogButtonBox, QLabel, QLineEdit, QListWidget, QListWidgetItem, QVBoxLayout,
                               QWidget)

from oste_core.data.priors import class_priors, read_priors, write_priors
from oste_core.models.modules.imagenet_names import imagenet_wordnet


class ImagenetDialog(QDialog):
    """Tick the ImageNet classes of one class of the folder at ``root``."""

    def __init__(self, root: Path, class_names: list[str], name: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle(f"What ImageNet calls '{name}'")
        self._root, self._classes, self._name = root, class_names, name
        match = next(m for m in class_priors(root, class_names) if m.name == name)
        self.source = QLabel(f"Now: {len(match.classes)} ImageNet classes ({match.how}). Tick the ones this class "
                             "means; saved to priors.yaml, used from the next training.")
        self.source.setWordWrap(True)
        self.search = QLineEdit()
        self.search.setPlaceholderText("Search ImageNet classes (e.g. tabby, sports car, 817)")
        self.search.setClearButtonEnabled(True)
        self.search.textChanged.connect(self._filter)
        self.list = QListWidget()
        for index, title in enumerate(imagenet_wordnet().class_names):
            item = QListWidgetItem(f"{index}: {title}")
            item.setFlags(Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsUserCheckable)
            item.setCheckState(Qt.CheckState.Checked if index in match.classes else Qt.CheckState.Unchecked)
            self.list.addItem(item)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(self.source)
        layout.addWidget(self.search)
        layout.addWidget(self.list, 1)
        layout.addWidget(buttons)
        self.resize(480, 560)

    def ticked(self) -> tuple[int, ...]:
        """The ticked ImageNet class indices."""
        return tuple(row for row in range(self.list.count())
                     if self.list.item(row).checkState() == Qt.CheckState.Checked)

    def set_ticked(self, index: int, ticked: bool) -> None:
        self.list.item(index).setCheckState(Qt.CheckState.Checked if ticked else Qt.CheckState.Unchecked)

    def _filter(self, text: str) -> None:
        needle = text.strip().lower()
        for row in range(self.list.count()):
            item = self.list.item(row)
            item.setHidden(bool(needle) and needle not in item.text().lower())

    def accept(self) -> None:
        """Write priors.yaml: the other classes' explicit choices kept, this class's replaced."""
        chosen = read_priors(self._root, self._classes)
        chosen[self._name] = self.ticked()
        write_priors(self._root, chosen)
        super().accept()
