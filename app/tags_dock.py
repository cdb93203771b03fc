"""The image's tags: tick classes from the project's class list, or add a new class.

Each class shows its export colour (VOC palette); ticked classes are listed first so they stay in
view with many classes. An image not tagged yet shows the run's suggested tags (`set_suggestions`):
the suggested classes in italics with their probability, Accept (T) and Reject (R) buttons. The
"ImageNet..." button opens the selected class's ImageNet prior classes (`imagenetRequested`). Every change is one undoable command on the image's own undo stack
(`undo_group`); the project saves each change to ``tags.csv`` right away (`tagsEdited`).
"""
from __future__ import annotations

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtGui import QFont, QUndoCommand, QUndoGroup, QUndoStack
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
from oste_core.engine.tag_suggestions import DEFAULT_THRESHOLD, SuggestedTag


class _TagChange(QUndoCommand):
    """One tag edit of one image: applying it shows and reports ``after``, undoing it ``before``."""

    def __init__(self, panel: TagsPanel, before: list[str], after: list[str]) -> None:
        changed = sorted(set(before) ^ set(after))
        super().__init__(f"tags ({', '.join(changed)})")
        self._panel, self._before, self._after = panel, before, after

    def redo(self) -> None:
        self._panel._apply(self._after)

    def undo(self) -> None:
        self._panel._apply(self._before)


class TagsPanel(QWidget):
    """Checkable class list for the current image plus an "add class" row."""

    tagsEdited = Signal(list)  # the image's new tag names, in class order
    classAdded = Signal(str)
    suggestionAccepted = Signal()
    suggestionRejected = Signal()
    imagenetRequested = Signal(str)  # class name

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._classes: list[str] = []
        self._ticked: set[str] = set()
        self._stem: str | None = None
        self.undo_group = QUndoGroup(self)
        self._stacks: dict[str, QUndoStack] = {}
        self._title = QLabel("No image")
        self._title.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self._list = QListWidget()
        self._list.setToolTip("Tick the classes present in this image (saved to tags.csv right away; "
                              "ticked classes are listed first)")
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
        self._imagenet_button = QPushButton("ImageNet...")
        self._imagenet_button.setToolTip("What ImageNet calls the selected class: the prior's ImageNet classes "
                                         "(saved to priors.yaml)")
        self._imagenet_button.clicked.connect(self._on_imagenet)
        add_row.addWidget(self._imagenet_button)
        self._suggestions: list[SuggestedTag] = []
        self._suggested = QLabel()
        self._suggested.setWordWrap(True)
        self.accept_button = QPushButton(icon("fa5s.check"), "Accept (T)")
        self.accept_button.setToolTip("Tag this image with the suggested classes")
        self.accept_button.clicked.connect(self.suggestionAccepted)
        self.reject_button = QPushButton(icon("fa5s.times"), "Reject (R)")
        self.reject_button.setToolTip("Drop the suggestion; the image stays not tagged yet")
        self.reject_button.clicked.connect(self.suggestionRejected)
        suggestion_row = QHBoxLayout()
        suggestion_row.addWidget(self.accept_button)
        suggestion_row.addWidget(self.reject_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addWidget(self._title)
        layout.addWidget(self._suggested)
        layout.addLayout(suggestion_row)
        layout.addWidget(self._list, 1)
        layout.addLayout(add_row)
        self._updating = False
        self._clicked = False  # inside a click's itemChanged: the list is re-sorted after it returns
        self._resort = QTimer(self)
        self._resort.setSingleShot(True)
        self._resort.setInterval(0)
        self._resort.timeout.connect(self._render)
        self.set_suggestions(None)
        self.setEnabled(False)

    def set_classes(self, class_names: list[str]) -> None:
        """The project's foreground classes (index 1..K), keeping the ticks of those still present."""
        self._classes = list(class_names)
        self._ticked &= set(class_names)
        self._render()

    def set_image(self, stem: str | None, tags: list[str], name: str = "") -> None:
        """Show the tags of image ``stem`` (None: nothing selected), titled with its file ``name``;
        the image's undo stack becomes active."""
        self.setEnabled(stem is not None)
        self._title.setText(f"Tags of <b>{name or stem}</b>" if stem else "No image")
        if stem != self._stem:
            self._stem = stem
            self.undo_group.setActiveStack(self._stack(stem) if stem else None)
        self._ticked = set(tags)
        self._render()

    def set_suggestions(self, tags: list[SuggestedTag] | None, tagged: bool = True) -> None:
        """The suggested tags of the shown image (None: none), and whether it is tagged already."""
        self._suggestions = list(tags or [])
        if tags is not None:
            sure = [t.name for t in self._suggestions if t.probability >= DEFAULT_THRESHOLD]
            shown = " · ".join(f"{t.name} {t.probability:.0%}" for t in self._suggestions if t.probability >= 0.05)
            self._suggested.setText(f"<i>Suggested:</i> <b>{', '.join(sure) or 'background only'}</b>"
                                    f"<br><small>{shown or 'every class below 5%'}</small>")
        elif not tagged:
            self._suggested.setText("<i>Not tagged yet</i>: tick its classes (a training suggests them)")
        self._suggested.setVisible(tags is not None or not tagged)
        for button in (self.accept_button, self.reject_button):
            button.setVisible(tags is not None)
        if self._clicked:
            self._resort.start()  # called back from a click's own itemChanged: re-render after it returns
        else:
            self._render()

    def suggested(self) -> list[str]:
        """The suggested classes (at the default threshold), most probable first."""
        return [t.name for t in self._suggestions if t.probability >= DEFAULT_THRESHOLD]

    def clear_history(self) -> None:
        """Forget every image's tag history (another folder was opened)."""
        self.undo_group.setActiveStack(None)
        for stack in self._stacks.values():
            self.undo_group.removeStack(stack)
            stack.deleteLater()
        self._stacks.clear()
        self._stem = None

    def _stack(self, stem: str) -> QUndoStack:
        if stem not in self._stacks:
            stack = self._stacks[stem] = QUndoStack(self)
            self.undo_group.addStack(stack)
        return self._stacks[stem]

    def tags(self) -> list[str]:
        """The ticked classes, in class order."""
        return [name for name in self._classes if name in self._ticked]

    def shown_order(self) -> list[str]:
        """The class names as listed: ticked first, each group in class order."""
        return [self._list.item(row).text() for row in range(self._list.count())]

    def set_tag_checked(self, name: str, checked: bool) -> None:
        """Tick or untick one class, as a click would."""
        for item in self._list.findItems(name, Qt.MatchFlag.MatchExactly):
            item.setCheckState(Qt.CheckState.Checked if checked else Qt.CheckState.Unchecked)

    def add_class(self, name: str) -> None:
        """Request a new class, as typing it and pressing Add would."""
        self._new_class.setText(name)
        self._on_add()

    def _render(self) -> None:
        """Rebuild the list: ticked classes first, then the others, each in class order."""
        self._updating = True
        self._list.clear()
        ordered = self.tags() + [name for name in self._classes if name not in self._ticked]
        probability = {t.name: t.probability for t in self._suggestions}
        for name in ordered:
            item = QListWidgetItem(swatch_icon(class_color(self._classes.index(name) + 1)), name)
            item.setFlags(Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsUserCheckable | Qt.ItemFlag.ItemIsSelectable)
            item.setCheckState(Qt.CheckState.Checked if name in self._ticked else Qt.CheckState.Unchecked)
            if name in probability:
                item.setToolTip(f"suggested: {probability[name]:.0%}")
                if probability[name] >= DEFAULT_THRESHOLD:
                    font = QFont(item.font())
                    font.setItalic(True)
                    item.setFont(font)
            self._list.addItem(item)
        self._updating = False

    def _apply(self, tags: list[str]) -> None:
        """Show ``tags`` and report them (a command applied or undone)."""
        self._ticked = set(tags)
        if self._clicked:
            self._resort.start()  # the clicked item must outlive its own itemChanged signal
        else:
            self._render()
        self.tagsEdited.emit(self.tags())

    def _on_item_changed(self, item: QListWidgetItem) -> None:
        name, checked = item.text(), item.checkState() == Qt.CheckState.Checked
        if self._updating or self._stem is None or checked == (name in self._ticked):
            return
        after = self._ticked | {name} if checked else self._ticked - {name}
        self._clicked = True
        try:
            self._stacks[self._stem].push(_TagChange(self, self.tags(), [n for n in self._classes if n in after]))
        finally:
            self._clicked = False

    def _on_imagenet(self) -> None:
        item = self._list.currentItem()
        if item is not None:
            self.imagenetRequested.emit(item.text())

    def _on_add(self) -> None:
        name = self._new_class.text().strip()
        if name:
            self._new_class.clear()
            self.classAdded.emit(name)

