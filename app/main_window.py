"""The main window: builds the widgets, the project model, the background workers and the controllers, and
wires them together.

Layout: image list (left dock), canvas (centre), tags and layers (right docks), training panel and log
(bottom dock), edit toolbar, status bar with the device and the CRF backend. Each controller gets the widgets
and services it works with: the menus `app.menus`, the editor `app.editor`, the current image and its layers
`app.image_view`, opening and closing folders `app.folder_control`, tags and classes `app.tags_control`, the
run in use `app.runs_control`, training and updates `app.training_control`, corrections `app.corrections`.
"""
from __future__ import annotations

import torch
from PySide6.QtCore import QByteArray, QSettings, Qt
from PySide6.QtGui import QCloseEvent, QGuiApplication, QShowEvent
from PySide6.QtWidgets import QDockWidget, QFrame, QMainWindow, QScrollArea, QSplitter, QWidget

from app.canvas import Canvas
from app.corrections import CorrectionsControl
from app.edit_toolbar import EditToolbar
from app.editor import EditorControl
from app.folder_conflicts import FolderConflicts
from app.folder_control import APP_TITLE, FolderControl
from app.image_list import ImageList
from app.image_view import ImageView
from app.layers_dock import LayersPanel
from app.log_view import LogView
from app.menus import Menus
from app.messages import Messages
from app.project import Project
from app.review import ReviewOrder
from app.runs_control import RunsControl
from app.status_bar import StatusBar
from app.style import STYLE_SHEET
from app.suggested_tags import SuggestedTagsControl
from app.tags_control import TagsControl
from app.tags_dock import TagsPanel
from app.training_control import TrainingControl
from app.training_panel import TrainingPanel
from app.workers import InferenceClient

PREFERRED_SIZE = (1400, 900)  # shrunk to the screen's available area


def device_choices() -> list[str]:
    """Devices offered for training: auto (CUDA when present), cpu, and each CUDA card."""
    cudas = [f"cuda:{i}" for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
    return ["auto", "cpu", *cudas]


def scrolled(widget: QWidget) -> QScrollArea:
    """``widget`` in a frameless scroll area, so a dock can shrink below its content on small screens."""
    area = QScrollArea()
    area.setWidget(widget)
    area.setWidgetResizable(True)
    area.setFrameShape(QFrame.Shape.NoFrame)
    return area


class MainWindow(QMainWindow):
    """OSTE Studio. ``settings`` holds the window layout, last folder and view choices."""

    def __init__(self, settings: QSettings, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.settings = settings
        self.setWindowTitle(APP_TITLE)
        self.setStyleSheet(STYLE_SHEET)
        self._fit_to_screen()
        self._default_layout = True  # dock sizes are set when first shown, unless a saved layout was restored
        self.project = Project(self)
        self.inference = InferenceClient(self)
        self._build_widgets()
        self._build_controllers()
        self._connect()
        self._restore_settings()

    # ------------------------------------------------------------ layout
    def _fit_to_screen(self) -> None:
        """Open at the preferred size, or the screen's available area when that is smaller."""
        screen = self.screen() or QGuiApplication.primaryScreen()
        available = screen.availableGeometry()
        self.resize(min(PREFERRED_SIZE[0], available.width()), min(PREFERRED_SIZE[1], available.height()))

    def showEvent(self, event: QShowEvent) -> None:  # noqa: N802 - Qt API
        """Size the docks for the window's real size the first time it is shown (docks sized earlier
        are scaled unevenly when the window later takes the screen's size)."""
        super().showEvent(event)
        if self._default_layout:
            self._default_layout = False
            self.resizeDocks([self.list_dock, self.tags_dock], [230, 250], Qt.Orientation.Horizontal)
            self.resizeDocks([self.training_dock], [240], Qt.Orientation.Vertical)
            self.resizeDocks([self.tags_dock, self.layers_dock], [2, 3], Qt.Orientation.Vertical)

    def _dock(self, title: str, name: str, widget: QWidget, area: Qt.DockWidgetArea) -> QDockWidget:
        dock = QDockWidget(title, self)
        dock.setObjectName(name)
        dock.setWidget(widget)
        self.addDockWidget(area, dock)
        return dock

    def _build_widgets(self) -> None:
        self.canvas = Canvas()
        self.setCentralWidget(self.canvas)
        self.image_list = ImageList()
        self.tags_panel = TagsPanel()
        self.layers_panel = LayersPanel()
        self.training_panel = TrainingPanel(device_choices())
        self.log_view = LogView()
        self.edit_toolbar = EditToolbar(self)
        self.status_bar = StatusBar()
        self.setStatusBar(self.status_bar)
        self.addToolBar(Qt.ToolBarArea.TopToolBarArea, self.edit_toolbar)
        right, left = Qt.DockWidgetArea.RightDockWidgetArea, Qt.DockWidgetArea.LeftDockWidgetArea
        self.list_dock = self._dock("Images", "images_dock", self.image_list, left)
        self.tags_dock = self._dock("Tags", "tags_dock", self.tags_panel, right)
        self.layers_dock = self._dock("Layers", "layers_dock", scrolled(self.layers_panel), right)
        bottom = QSplitter(Qt.Orientation.Horizontal)
        bottom.addWidget(scrolled(self.training_panel))
        bottom.addWidget(self.log_view)
        bottom.setStretchFactor(0, 3)
        bottom.setStretchFactor(1, 2)
        self.training_dock = self._dock("Training", "training_dock", bottom, Qt.DockWidgetArea.BottomDockWidgetArea)

    def _build_controllers(self) -> None:
        project, inference, image_list = self.project, self.inference, self.image_list
        self.messages = messages = Messages(self.log_view, self.status_bar, self)
        self.view = ImageView(project, inference, self.canvas, self.layers_panel, messages, self)
        self.editor = EditorControl(project, self.view, self.canvas, self.edit_toolbar, self.tags_panel, messages,
                                    self)
        self.corrections = CorrectionsControl(project, inference, self.editor, self.view, image_list,
                                              self.status_bar, messages, self)
        self.review = ReviewOrder(project, inference, image_list, messages, self)
        self.suggested_tags = SuggestedTagsControl(project, inference, self.view, self.tags_panel, image_list,
                                                   messages, self)
        self.training = TrainingControl(project, self.training_panel, messages, self)
        self.conflicts = FolderConflicts(project, messages, self)
        self.tags = TagsControl(project, self.view, self.conflicts, self.tags_panel, image_list, self.edit_toolbar,
                                self.layers_panel, messages, self)
        self.runs = RunsControl(project, inference, self.view, self.review, self.training_panel, self.layers_panel,
                                image_list, self.settings, messages, self)
        self.folders = FolderControl(project=project, inference=inference, settings=self.settings,
                                     messages=messages, conflicts=self.conflicts, editor=self.editor,
                                     training=self.training, review=self.review, view=self.view, tags=self.tags,
                                     runs=self.runs, image_list=image_list, parent=self)
        docks = (self.list_dock, self.tags_dock, self.layers_dock, self.training_dock)
        self.menus = Menus(project=project, folders=self.folders, training=self.training,
                           suggested_tags=self.suggested_tags, image_list=image_list, canvas=self.canvas,
                           layers_panel=self.layers_panel, edit_toolbar=self.edit_toolbar,
                           tags_undo=self.tags_panel.undo_group, dock_actions=[d.toggleViewAction() for d in docks],
                           quit_app=self.close, parent=self)
        self.setMenuBar(self.menus.menu_bar)
        self.insertToolBar(self.edit_toolbar, self.menus.file_toolbar)

    def _connect(self) -> None:
        self.image_list.currentChanged.connect(self.view.show)
        self.editor.maskChanged.connect(self.view.refresh_layer)
        self.editor.userSaved.connect(self.training.update_after_save)
        self.training.runEnded.connect(self.runs.select_run)
        self.training.stopped.connect(self._on_training_stopped)
        self.folders.titleChanged.connect(self.setWindowTitle)
        self.canvas.zoomChanged.connect(self.status_bar.show_zoom)
        self.canvas.cursorMoved.connect(lambda x, y: self.status_bar.show_cursor(x, y, self.canvas.document()))
        panel = self.training_panel
        panel.iters.valueChanged.connect(lambda value: self.settings.setValue("training/iters", value))
        panel.auto_update.toggled.connect(lambda on: self.settings.setValue("training/autoUpdate", on))

    # ---------------------------------------------------------- settings
    def _restore_settings(self) -> None:
        geometry = self.settings.value("window/geometry")
        if isinstance(geometry, QByteArray):
            self.restoreGeometry(geometry)
        state = self.settings.value("window/state")
        if isinstance(state, QByteArray):
            self.restoreState(state)
            self._default_layout = False
        self.layers_panel.set_opacity(float(self.settings.value("view/opacity", self.layers_panel.opacity())))
        self.layers_panel.set_colormap(str(self.settings.value("view/colormap", self.layers_panel.colormap())))
        self.canvas.set_opacity(self.layers_panel.opacity())
        panel = self.training_panel
        panel.iters.setValue(int(self.settings.value("training/iters", panel.iters.value())))
        panel.auto_update.setChecked(str(self.settings.value("training/autoUpdate", "false")).lower() == "true")

    def _save_settings(self) -> None:
        self.settings.setValue("window/geometry", self.saveGeometry())
        self.settings.setValue("window/state", self.saveState())
        self.settings.setValue("view/opacity", self.layers_panel.opacity())
        self.settings.setValue("view/colormap", self.layers_panel.colormap())
        self.settings.sync()

    # -------------------------------------------------------------- quit
    def _on_training_stopped(self) -> None:
        if self.training.quitting:
            self.close()

    def closeEvent(self, event: QCloseEvent) -> None:  # noqa: N802 - Qt API
        """Quit; a running training is asked to stop and the window closes when it has (never blocking)."""
        if self.folders.prepare_quit():
            self._save_settings()
            event.accept()
        else:
            event.ignore()
