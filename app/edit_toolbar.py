"""The editing toolbar: tools (pan, brush, eraser, fill, similar-colour fill, polygon), brush size,
colour tolerance, class, unsure, undo/redo, accept suggestion / pseudo-label and save.
Shortcuts follow labelme habits (A / D stay free for previous / next image)."""
from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QAction, QActionGroup, QKeySequence
from PySide6.QtWidgets import QComboBox, QLabel, QSpinBox, QToolBar, QWidget

from app.canvas import Tool
from app.style import class_color, icon, swatch_icon
from oste_core.editing import DEFAULT_TOLERANCE
from oste_core.labels import UNSURE

TOOLS: list[tuple[Tool, str, str, str]] = [
    (Tool.PAN, "Pan", "fa5s.hand-paper", "H"),
    (Tool.BRUSH, "Brush", "fa5s.paint-brush", "B"),
    (Tool.ERASER, "Eraser (paints background)", "fa5s.eraser", "E"),
    (Tool.FILL, "Flood fill (a region of the labels shown)", "fa5s.fill-drip", "F"),
    (Tool.COLOR_FILL, "Similar-colour fill (the image region around the click)", "mdi6.magic-staff", "W"),
    (Tool.POLYGON, "Polygon fill (click vertices; Enter or double-click closes)", "fa5s.draw-polygon", "P"),
]


class EditToolbar(QToolBar):
    """Emits what the user asks for; `app.editor.EditorControl` applies it to the canvas and document."""

    toolChanged = Signal(str)
    radiusChanged = Signal(int)
    paintValueChanged = Signal(int)
    toleranceChanged = Signal(int)
    undoRequested = Signal()
    redoRequested = Signal()
    acceptPseudoRequested = Signal()
    acceptSuggestionRequested = Signal()
    saveRequested = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__("Edit", parent)
        self.setObjectName("edit_toolbar")
        self._tool_group = QActionGroup(self)
        self._tool_actions: dict[Tool, QAction] = {}
        for tool, title, icon_name, key in TOOLS:
            action = QAction(icon(icon_name), title, self)
            action.setCheckable(True)
            action.setShortcut(QKeySequence(key))
            action.setToolTip(f"{title} ({key})")
            action.setData(tool.value)
            self._tool_group.addAction(action)
            self._tool_actions[tool] = action
            self.addAction(action)
        self._tool_actions[Tool.BRUSH].setChecked(True)
        self._tool_group.triggered.connect(self._on_tool)

        self.addSeparator()
        self.addWidget(QLabel(" Size "))
        self._radius = QSpinBox()
        self._radius.setRange(0, 200)
        self._radius.setValue(6)
        self._radius.setSuffix(" px")
        self._radius.setToolTip("Brush / eraser radius in image pixels")
        self._radius.valueChanged.connect(self.radiusChanged)
        self.addWidget(self._radius)
        self._tolerance = QSpinBox()
        self._tolerance.setRange(0, 255)
        self._tolerance.setValue(DEFAULT_TOLERANCE)
        self._tolerance.setPrefix("± ")
        self._tolerance.setToolTip("Similar-colour fill: how far (per RGB channel) a colour may be from the clicked one")
        self._tolerance.valueChanged.connect(self.toleranceChanged)
        self._tolerance_actions = [self.addWidget(QLabel(" Tolerance ")), self.addWidget(self._tolerance)]
        self.addWidget(QLabel(" Class "))
        self._classes = QComboBox()
        self._classes.setMinimumContentsLength(10)
        self._classes.setToolTip("The class the brush, fill and polygon paint (the image's tags plus background)")
        self._classes.currentIndexChanged.connect(lambda _i: self.paintValueChanged.emit(self.paint_value()))
        self.addWidget(self._classes)
        self._unsure = QAction(icon("mdi6.texture-box"), "Mark unsure (255; not verified yet: remove corrections)", self)
        self._unsure.setCheckable(True)
        self._unsure.setShortcut(QKeySequence("U"))
        self._unsure.setToolTip("Paint 'unsure' (255, ignored in training) instead of the class (U); on an image "
                                "that is not verified it removes corrections")
        self._unsure.toggled.connect(lambda _c: self.paintValueChanged.emit(self.paint_value()))
        self.addAction(self._unsure)

        self.addSeparator()
        self.undo_action = self._button("fa5s.undo", "Undo", QKeySequence.StandardKey.Undo, self.undoRequested)
        self.redo_action = self._button("fa5s.redo", "Redo", QKeySequence("Ctrl+Shift+Z"), self.redoRequested)
        self.redo_action.setShortcuts([QKeySequence("Ctrl+Shift+Z"), QKeySequence("Ctrl+Y")])
        self.accept_suggestion_action = self._button("fa5s.check-double", "Accept suggestion", QKeySequence("S"),
                                                     self.acceptSuggestionRequested)
        self.accept_action = self._button("fa5s.file-import", "Accept pseudo-label (unsure pixels stay unsure)",
                                          QKeySequence("Ctrl+Shift+A"), self.acceptPseudoRequested)
        self.save_action = self._button("fa5s.save", "Save verified mask (not verified yet: the suggestion with "
                                        "your corrections)", QKeySequence.StandardKey.Save,
                                        self.saveRequested)
        self.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonIconOnly)
        self.set_history(False, False)
        self._on_tool(self._tool_actions[Tool.BRUSH])

    def _on_tool(self, action: QAction) -> None:
        for widget_action in self._tolerance_actions:
            widget_action.setVisible(action.data() == Tool.COLOR_FILL.value)
        self.toolChanged.emit(action.data())

    def _button(self, icon_name: str, title: str, shortcut, signal) -> QAction:
        action = QAction(icon(icon_name), title, self)
        action.setShortcut(QKeySequence(shortcut))
        action.setToolTip(f"{title} ({QKeySequence(shortcut).toString()})")
        action.triggered.connect(signal)
        self.addAction(action)
        return action

    # ------------------------------------------------------------- state
    def tool(self) -> Tool:
        return Tool(self._tool_group.checkedAction().data())

    def set_tool(self, tool: Tool | str) -> None:
        """Select a tool as its button/shortcut would (emits toolChanged)."""
        self._tool_actions[Tool(tool)].trigger()

    def radius(self) -> int:
        return self._radius.value()

    def tolerance(self) -> int:
        return self._tolerance.value()

    def set_tolerance(self, tolerance: int) -> None:
        self._tolerance.setValue(tolerance)

    def set_radius(self, radius: int) -> None:
        self._radius.setValue(radius)

    def set_classes(self, entries: list[tuple[int, str]]) -> None:
        """The paintable classes: (index, name) of background plus the image's tags."""
        current = self._classes.currentData()
        self._classes.blockSignals(True)
        self._classes.clear()
        for index, name in entries:
            self._classes.addItem(swatch_icon(class_color(index)), name, index)
        position = self._classes.findData(current) if current else -1
        if position < 0:  # keep a foreground choice when possible, else the first foreground class
            position = 1 if len(entries) > 1 else 0
        self._classes.setCurrentIndex(position)
        self._classes.blockSignals(False)
        self.paintValueChanged.emit(self.paint_value())

    def class_entries(self) -> list[tuple[int, str]]:
        """The (index, name) pairs offered by the class picker."""
        return [(int(self._classes.itemData(i)), self._classes.itemText(i)) for i in range(self._classes.count())]

    def set_class(self, index: int) -> None:
        self._classes.setCurrentIndex(max(self._classes.findData(index), 0))

    def set_unsure(self, unsure: bool) -> None:
        self._unsure.setChecked(unsure)

    def paint_value(self) -> int:
        """255 when "mark unsure" is on, else the chosen class index (0 = background)."""
        if self._unsure.isChecked():
            return UNSURE
        data = self._classes.currentData()
        return int(data) if data is not None else 0

    def set_history(self, can_undo: bool, can_redo: bool) -> None:
        self.undo_action.setEnabled(can_undo)
        self.redo_action.setEnabled(can_redo)
