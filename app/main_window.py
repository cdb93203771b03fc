"""The main window: wires the widgets, the project model and the background workers together.

Layout: image list (left dock), canvas (centre), tags and layers (right docks), training panel
and log (bottom dock), edit toolbar, status bar with the device and the CRF backend. Menus live
in `app.menus`, the editor wiring in `app.editor`, the current image and its layers in
`app.image_view`, training and updates in `app.training_control`, corrections in `app.corrections`.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from PySide6.QtCore import QByteArray, QSettings, Qt, Signal
from PySide6.QtGui import QCloseEvent, QGuiApplication, QShowEvent
from PySide6.QtWidgets import (
    QDockWidget,
    QFileDialog,
    QFrame,
    QLabel,
    QMainWindow,
    QMessageBox,
    QScrollArea,
    QSplitter,
    QWidget,
)

from app.canvas import Canvas
from app.corrections import CorrectionsControl
from app.edit_toolbar import EditToolbar
from app.editor import EditorControl
from app.export_dialog import ExportDialog
from app.folder_conflicts import FolderConflicts
from app.help_dialog import HelpDialog
from app.image_list import ImageList
from app.image_view import ImageView
from app.layers_dock import LayersPanel
from app.log_view import LogView
from app.menus import Menus
from app.project import Project, TagsChangedOnDisk, demo_location, ensure_demo
from app.review import ReviewOrder
from app.suggested_tags import SuggestedTagsControl
from app.style import STYLE_SHEET
from app.tags_dock import TagsPanel
from app.training_control import TrainingControl
from app.training_panel import TrainingPanel
from app.workers import InferenceClient, ValidationWorker, start_thread
from oste_core.data import FolderError
from oste_core.labels import BACKGROUND
from oste_core.models.modules.crf import make_crf
from oste_core.utils.device import device_description, pick_device

APP_TITLE = "OSTE Studio"
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

    trainingEvent = Signal(object)  # every TrainEvent of the running training or update
    trainingFinished = Signal(str)  # the run folder, "" when the training failed

    def __init__(self, settings: QSettings, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.settings = settings
        self.setWindowTitle(APP_TITLE)
        self.setStyleSheet(STYLE_SHEET)
        self._fit_to_screen()
        self.project = Project(self)
        self.inference = InferenceClient(self)
        self._validation: tuple = ()  # (QThread, ValidationWorker) while images are checked
        self.closing = False  # the user confirmed quitting; the window closes once the training stopped
        self._default_layout = True  # dock sizes are set when first shown, unless a saved layout was restored
        self.export_dialog: ExportDialog | None = None
        self.help_dialog: HelpDialog | None = None
        self.error_box: QMessageBox | None = None  # the last error dialog

        self.canvas = Canvas()
        self.setCentralWidget(self.canvas)
        self.image_list = ImageList()
        self.tags_panel = TagsPanel()
        self.layers_panel = LayersPanel()
        self.training_panel = TrainingPanel(device_choices())
        self.log_view = LogView()
        self.edit_toolbar = EditToolbar(self)
        self._build_docks()
        self.editor = EditorControl(self)
        self.view = ImageView(self)
        self.corrections = CorrectionsControl(self.project, self.inference, self.editor, self.view, self.image_list,
                                              self.statusBar(), self.report)
        self.review = ReviewOrder(self)
        self.suggested_tags = SuggestedTagsControl(self)
        self.training = TrainingControl(self)
        self.conflicts = FolderConflicts(self)
        self.menus = Menus(self)
        self._build_status_bar()
        self._connect()
        self._restore_settings()
        self.training_panel.set_project_open(False)

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

    def _build_docks(self) -> None:
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

    def _build_status_bar(self) -> None:
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
            self.statusBar().addPermanentWidget(label)

    def _connect(self) -> None:
        self.project.entryChanged.connect(self._on_entry_changed)
        self.image_list.currentChanged.connect(self.view.show)
        self.view.imageChanged.connect(self._on_image_changed)
        self.tags_panel.tagsEdited.connect(self._on_tags_edited)
        self.tags_panel.classAdded.connect(self._on_class_added)
        layers = self.layers_panel
        for signal in (layers.layerChanged, layers.classChanged, layers.colormapChanged, layers.maskVisibleChanged):
            signal.connect(self.view.refresh_layer)
        layers.opacityChanged.connect(self.canvas.set_opacity)
        layers.maskVisibleChanged.connect(self.canvas.set_mask_visible)
        self.editor.maskChanged.connect(self.view.refresh_layer)
        self.editor.userSaved.connect(self._on_user_saved)
        self.canvas.zoomChanged.connect(lambda s: self.zoom_label.setText(f"{s:.0%}"))
        self.canvas.cursorMoved.connect(self._on_cursor_moved)
        panel = self.training_panel
        panel.startRequested.connect(lambda: self.start_training(resume=False))
        panel.resumeRequested.connect(lambda: self.start_training(resume=True))
        panel.updateRequested.connect(self.training.request_update)
        panel.stopRequested.connect(self.stop_training)
        panel.runSelected.connect(self._on_run_selected)
        panel.iters.valueChanged.connect(lambda value: self.settings.setValue("training/iters", value))
        panel.auto_update.toggled.connect(lambda on: self.settings.setValue("training/autoUpdate", on))
        self.training.event.connect(self.trainingEvent)
        self.training.finished.connect(self.trainingFinished)
        self.training.stopped.connect(self._on_training_stopped)
        inference = self.inference
        inference.loaded.connect(self._on_model_loaded)
        inference.loadFailed.connect(lambda run, msg: self.report(f"cannot load the model of {run}: {msg}", True))

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

    def _run_key(self) -> str:
        """Settings key of the run chosen for this project (keys may not contain path separators)."""
        return "runs/" + hashlib.sha1(str(self.project.root).encode("utf-8")).hexdigest()[:16]

    # ----------------------------------------------------------- messages
    def report(self, text: str, error: bool = False) -> None:
        """A line in the log and the status bar."""
        self.log_view.append_message(text, error=error)
        self.statusBar().showMessage(text, 8000)

    def show_error(self, title: str, text: str) -> None:
        """A non-blocking error dialog (the app stays usable)."""
        self.report(text, error=True)
        self.error_box = QMessageBox(QMessageBox.Icon.Critical, title, text, QMessageBox.StandardButton.Ok, self)
        self.error_box.open()

    def ask(self, title: str, text: str, buttons: QMessageBox.StandardButton,
            default: QMessageBox.StandardButton) -> QMessageBox.StandardButton:
        return QMessageBox.question(self, title, text, buttons, default)

    def show_help(self, tab: int) -> HelpDialog:
        """Open the shortcut sheet or the layer legend (Help menu)."""
        if self.help_dialog is None:
            self.help_dialog = HelpDialog(self.menus.shortcut_actions(), self.project.class_names, self)
        self.help_dialog.set_classes(self.project.class_names)
        self.help_dialog.show_tab(tab)
        return self.help_dialog

    # ------------------------------------------------------------ project
    def choose_folder(self) -> None:
        start = str(self.settings.value("lastFolder", str(Path.home())))
        folder = QFileDialog.getExistingDirectory(self, "Open a labelled folder", start)
        if folder:
            self.open_folder(folder)

    def open_demo(self) -> bool:
        """Create the synthetic demo project in the user's data folder (once) and open it."""
        path = demo_location()
        self.report(f"preparing the demo project in {path} ...")
        try:
            ensure_demo(path)
        except (OSError, ValueError) as exc:
            self.show_error("Demo project", f"{path}: cannot write the demo data ({exc})")
            return False
        return self.open_folder(path)

    def open_folder(self, path: str | Path) -> bool:
        """Open a labelled folder (native, VOC or subfolders); False when it could not be opened."""
        if self.training.is_running():
            self.show_error("Open folder", "Stop the training before opening another folder.")
            return False
        if not self.editor.resolve_unsaved("opening another folder"):
            return False
        self._stop_validation()
        self.review.cancel()
        try:
            if not self.conflicts.open_project(path):
                return False
        except (FolderError, OSError, ValueError, RuntimeError) as exc:
            self.show_error("Cannot open folder", str(exc))
            return False
        project = self.project
        self.settings.setValue("lastFolder", str(project.root))
        self.view.show("")
        self.setWindowTitle(f"{APP_TITLE} — {project.root}" + (" (read-only)" if project.read_only else ""))
        self.tags_panel.clear_history()
        self.show_project_contents()
        self.training_panel.reset()
        self.training_panel.set_project_open(True)
        self.report(f"opened {project.root} ({project.folder.layout} layout, {len(project.stems())} images, "
                    f"{len(project.class_names)} classes)" + ("; read-only" if project.read_only else ""))
        for problem in project.problems:
            self.report(problem, error=True)
        selected = project.preferred_run(self.settings.value(self._run_key()))
        self.training_panel.set_runs(project.runs(), selected)
        self._on_run_selected(str(selected) if selected else "")
        self._start_validation()
        stems = self.image_list.visible_stems()
        if stems:
            self.image_list.select_stem(stems[0])
        return True

    def show_project_contents(self) -> None:
        """List the project's images and classes again (opened, or its tags reloaded); the current image stays."""
        project, stem = self.project, self.view.stem
        self.image_list.set_entries([project.entry(s) for s in project.stems()], project.class_names)
        self._on_classes_changed()
        if stem in project.stems():
            self.image_list.select_stem(stem)

    def _on_classes_changed(self) -> None:
        names = self.project.class_names
        self.tags_panel.set_classes(names)
        self.image_list.set_class_names(names)
        if self.view.stem:
            self._show_tags(self.view.stem)
        self._update_class_pickers()

    def _show_tags(self, stem: str) -> None:
        self.tags_panel.set_image(stem or None, self.project.tags(stem) if stem else [],
                                  self.project.entry(stem).display_name if stem else "")

    def current_stem(self) -> str:
        return self.view.stem

    def _on_image_changed(self, stem: str) -> None:
        self._show_tags(stem)
        if stem:
            self._update_class_pickers()

    def _update_class_pickers(self) -> None:
        stem = self.view.stem
        tags = self.project.tag_indices(stem) if stem else []
        names = self.project.class_names
        self.edit_toolbar.set_classes([(BACKGROUND, "background")] + [(i, names[i - 1]) for i in tags])
        self.layers_panel.set_classes(names, tags)

    def _on_entry_changed(self, stem: str) -> None:
        self.image_list.update_entry(self.project.entry(stem))

    def _start_validation(self) -> None:
        images = [(stem, self.project.image_path(stem)) for stem in self.project.stems()]
        worker = ValidationWorker(images)
        worker.bad.connect(self._on_bad_image)
        self._validation = (start_thread(worker, self, worker.finished), worker)

    def _stop_validation(self) -> None:
        if self._validation:
            thread, worker = self._validation
            worker.cancel()
            thread.quit()
            thread.wait()
            self._validation = ()

    def _on_bad_image(self, stem: str, message: str) -> None:
        if self.project.is_open() and not self.project.error(stem):
            self.project.set_error(stem, message)
            self.report(message, error=True)

    # -------------------------------------------------------------- tags
    def _on_tags_edited(self, tags: list[str]) -> None:
        stem = self.view.stem
        try:
            self.project.set_tags(stem, tags)
        except TagsChangedOnDisk:
            self.conflicts.tags_changed(lambda: self._on_tags_edited(tags))
            return
        except (OSError, ValueError, KeyError) as exc:
            self.show_error("Tags not saved", f"{self.project.root / 'tags.csv'}: {exc}")
            self._show_tags(stem)  # the ticks the file has
            return
        self.report(f"{stem}: tags {', '.join(tags) or '(none)'} saved to tags.csv")
        self._update_class_pickers()
        self.view.refresh_layer()
        self.view.request_prediction()

    def _on_class_added(self, name: str) -> None:
        try:
            index = self.project.add_class(name)
        except TagsChangedOnDisk:
            self.conflicts.tags_changed(lambda: self._on_class_added(name))
            return
        except (OSError, ValueError) as exc:
            self.show_error("Class not added", str(exc))
            return
        self._on_classes_changed()
        self.report(f"class {index} '{name}' added to classes.txt")

    # ----------------------------------------------------------- training
    def start_training(self, resume: bool = False) -> None:
        """Train a new run (or resume the selected one) in a background thread."""
        self.training.start(resume)

    def stop_training(self) -> None:
        """Stop after the current iteration; returns at once."""
        self.training.stop()

    def is_training(self) -> bool:
        return self.training.is_running()

    def _on_user_saved(self, _stem: str) -> None:
        if self.training_panel.auto_update.isChecked():
            self.training.request_update()

    def select_run(self, run_dir: Path | None) -> None:
        """List the project's runs and load ``run_dir`` (else the newest)."""
        runs = self.project.runs()
        selected = run_dir if run_dir in runs else (runs[0] if runs else None)
        self.training_panel.set_runs(runs, selected)
        self._on_run_selected(str(selected) if selected else "")

    def _on_run_selected(self, run_dir: str) -> None:
        """Use ``run_dir`` for CAMs, pseudo-labels and suggestions (remembered per project)."""
        self.review.cancel()
        self.project.clear_predictions()
        for stem in self.project.stems():
            self._on_entry_changed(stem)
        self.view.refresh_layer()
        if not run_dir:
            self.inference.unload()
            self.layers_panel.set_busy(False, "No trained run yet: train a model to see CAMs.")
            return
        self.settings.setValue(self._run_key(), Path(run_dir).name)
        self.layers_panel.set_busy(True, f"Loading the model of run {Path(run_dir).name} ...")
        self.inference.load_run(run_dir, self.training_panel.device.currentText())

    def _on_model_loaded(self, run_dir: str) -> None:
        self.report(f"model of run {Path(run_dir).name} loaded")
        self.layers_panel.set_busy(False)
        self.view.request_prediction()

    # ------------------------------------------------------------- export
    def show_export_dialog(self) -> ExportDialog | None:
        """Open the export dialog (after asking about unsaved masks)."""
        if not self.project.is_open() or not self.editor.resolve_unsaved("exporting"):
            return None
        self.export_dialog = ExportDialog(self.project.folder, self.inference.predictor, self)
        self.export_dialog.finishedMessage.connect(self.report)
        self.export_dialog.open()
        return self.export_dialog

    # -------------------------------------------------------------- misc
    def _on_cursor_moved(self, x: int, y: int) -> None:
        doc = self.canvas.document()
        if doc is not None and 0 <= y < doc.shape[0] and 0 <= x < doc.shape[1]:
            self.cursor_label.setText(f"x {x}  y {y}  label {doc.mask[y, x]}")
        else:
            self.cursor_label.clear()

    def _on_training_stopped(self) -> None:
        if self.closing:
            self.close()

    def closeEvent(self, event: QCloseEvent) -> None:  # noqa: N802 - Qt API
        """Quit; a running training is asked to stop and the window closes when it has (never blocking)."""
        if self.training.is_running():
            if not self.closing:
                answer = self.ask("Training is running", "Stop the training and quit? The last checkpoint is kept.",
                                  QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
                                  QMessageBox.StandardButton.No)
                if answer != QMessageBox.StandardButton.Yes or not self.editor.resolve_unsaved("quitting"):
                    event.ignore()
                    return
                self.closing = True
                self.training.stop()
                self.report("stopping the training … the window closes when the current iteration ends")
            event.ignore()
            return
        if not self.editor.resolve_unsaved("quitting"):
            self.closing = False
            event.ignore()
            return
        if self.export_dialog is not None:
            self.export_dialog.wait()
        self._stop_validation()
        self.inference.shutdown()
        self.project.close()
        self._save_settings()
        event.accept()
