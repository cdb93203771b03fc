"""The main window: wires the widgets, the project model and the background workers together.

Layout: image list (left dock), canvas (centre), tags and layers (right docks), training panel
and log (bottom dock), edit toolbar, status bar with the device and the CRF backend.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch
from PySide6.QtCore import QByteArray, QSettings, Qt, QThread, Signal
from PySide6.QtGui import QAction, QCloseEvent, QKeySequence
from PySide6.QtWidgets import QDockWidget, QFileDialog, QLabel, QMainWindow, QMessageBox, QSplitter, QWidget

from app.canvas import Canvas
from app.edit_toolbar import EditToolbar
from app.export_dialog import ExportDialog
from app.image_list import ImageList
from app.layers_dock import LAYERS, PREDICTION_LAYERS, LayersPanel, layer_note, layer_rgba
from app.log_view import LogView
from app.project import Project, demo_location, ensure_demo
from app.style import STYLE_SHEET, icon, resize_to
from app.tags_dock import TagsPanel
from app.training_panel import TrainingPanel
from app.workers import InferenceClient, PredictRequest, TrainWorker, ValidationWorker, start_thread
from oste_core.data import FolderError, ImageLoadError, load_image, load_mask
from oste_core.editing import BACKGROUND, VerifiedMaskConflict
from oste_core.engine.trainer import TrainEvent
from oste_core.models.modules.crf import make_crf
from oste_core.utils.device import device_description, pick_device

APP_TITLE = "OSTE Studio"


def device_choices() -> list[str]:
    """Devices offered for training: auto (CUDA when present), cpu, and each CUDA card."""
    cudas = [f"cuda:{i}" for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
    return ["auto", "cpu", *cudas]


class MainWindow(QMainWindow):
    """OSTE Studio. ``settings`` holds the window layout, last folder and view choices."""

    trainingEvent = Signal(object)  # every TrainEvent of the running training
    trainingFinished = Signal(str)  # the run folder, "" when the training failed

    def __init__(self, settings: QSettings, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.settings = settings
        self.setWindowTitle(APP_TITLE)
        self.setStyleSheet(STYLE_SHEET)
        self.resize(1400, 900)
        self.project = Project(self)
        self.inference = InferenceClient(self)
        self._stem = ""
        self._image: np.ndarray | None = None
        self._train_thread: QThread | None = None
        self._train_result = ""  # run folder of the last training ("" when it failed)
        self._train_worker: TrainWorker | None = None
        self._validation: tuple[QThread, ValidationWorker] | None = None
        self.export_dialog: ExportDialog | None = None
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
        self._build_actions()
        self._build_status_bar()
        self._connect()
        self._restore_settings()
        self.training_panel.set_project_open(False)

    # ------------------------------------------------------------ layout
    def _dock(self, title: str, name: str, widget: QWidget, area: Qt.DockWidgetArea) -> QDockWidget:
        dock = QDockWidget(title, self)
        dock.setObjectName(name)
        dock.setWidget(widget)
        self.addDockWidget(area, dock)
        return dock

    def _build_docks(self) -> None:
        self.addToolBar(Qt.ToolBarArea.TopToolBarArea, self.edit_toolbar)
        self.list_dock = self._dock("Images", "images_dock", self.image_list, Qt.DockWidgetArea.LeftDockWidgetArea)
        self.tags_dock = self._dock("Tags", "tags_dock", self.tags_panel, Qt.DockWidgetArea.RightDockWidgetArea)
        self.layers_dock = self._dock("Layers", "layers_dock", self.layers_panel, Qt.DockWidgetArea.RightDockWidgetArea)
        bottom = QSplitter(Qt.Orientation.Horizontal)
        bottom.addWidget(self.training_panel)
        bottom.addWidget(self.log_view)
        bottom.setStretchFactor(0, 3)
        bottom.setStretchFactor(1, 2)
        self.training_dock = self._dock("Training", "training_dock", bottom, Qt.DockWidgetArea.BottomDockWidgetArea)
        self.resizeDocks([self.list_dock, self.tags_dock], [230, 250], Qt.Orientation.Horizontal)
        self.resizeDocks([self.training_dock], [250], Qt.Orientation.Vertical)

    def _action(self, title: str, slot, shortcut: str | QKeySequence.StandardKey | None = None,
                icon_name: str | None = None) -> QAction:
        action = QAction(title, self)
        if icon_name:
            action.setIcon(icon(icon_name))
        if shortcut is not None:
            action.setShortcut(QKeySequence(shortcut))
        action.triggered.connect(slot)
        self.addAction(action)
        return action

    def _build_actions(self) -> None:
        self.open_action = self._action("&Open folder...", self._choose_folder, QKeySequence.StandardKey.Open,
                                        "fa5s.folder-open")
        self.demo_action = self._action("Open &demo project", self.open_demo, None, "fa5s.flask")
        self.export_action = self._action("&Export masks...", self.show_export_dialog, "Ctrl+E", "fa5s.file-export")
        quit_action = self._action("&Quit", self.close, QKeySequence.StandardKey.Quit)
        self.prev_action = self._action("&Previous image", lambda: self.image_list.step(-1), "A", "fa5s.arrow-left")
        self.next_action = self._action("&Next image", lambda: self.image_list.step(+1), "D", "fa5s.arrow-right")
        fit = self._action("&Fit to window", self.canvas.fit, "Ctrl+F", "fa5s.expand")
        actual = self._action("&Actual size (1:1)", self.canvas.actual_size, "Ctrl+0", "fa5s.compress")
        zoom_in = self._action("Zoom &in", lambda: self.canvas.zoom_by(1.25), QKeySequence.StandardKey.ZoomIn,
                               "fa5s.search-plus")
        zoom_out = self._action("Zoom &out", lambda: self.canvas.zoom_by(0.8), QKeySequence.StandardKey.ZoomOut,
                                "fa5s.search-minus")

        file_menu = self.menuBar().addMenu("&File")
        for action in (self.open_action, self.demo_action, self.export_action):
            file_menu.addAction(action)
        file_menu.addSeparator()
        file_menu.addAction(quit_action)
        edit_menu = self.menuBar().addMenu("&Edit")
        toolbar = self.edit_toolbar
        for action in (toolbar.undo_action, toolbar.redo_action, toolbar.accept_action, toolbar.save_action):
            edit_menu.addAction(action)
        view_menu = self.menuBar().addMenu("&View")
        for action in (fit, actual, zoom_in, zoom_out):
            view_menu.addAction(action)
        view_menu.addSeparator()
        for number, (_key, title) in enumerate(LAYERS, start=1):
            layer_action = self._action(f"Layer {number}: {title}",
                                        lambda _=False, n=number: self.layers_panel.set_layer_number(n), str(number))
            view_menu.addAction(layer_action)
        view_menu.addSeparator()
        for dock in (self.list_dock, self.tags_dock, self.layers_dock, self.training_dock):
            view_menu.addAction(dock.toggleViewAction())
        image_menu = self.menuBar().addMenu("&Image")
        image_menu.addAction(self.prev_action)
        image_menu.addAction(self.next_action)

        file_toolbar = self.addToolBar("File")
        file_toolbar.setObjectName("file_toolbar")
        for action in (self.open_action, self.export_action, None, self.prev_action, self.next_action, None,
                       zoom_in, zoom_out, fit, actual):
            if action is None:
                file_toolbar.addSeparator()
            else:
                file_toolbar.addAction(action)
        self.insertToolBar(self.edit_toolbar, file_toolbar)

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
        bar = self.statusBar()
        bar.addPermanentWidget(self.cursor_label)
        bar.addPermanentWidget(self.zoom_label)
        bar.addPermanentWidget(self.device_label)
        bar.addPermanentWidget(self.crf_label)

    def _connect(self) -> None:
        project = self.project
        project.entryChanged.connect(self._on_entry_changed)
        self.image_list.currentChanged.connect(self.show_image)
        self.image_list.uncertaintyRequested.connect(self.compute_review_order)
        self.tags_panel.tagsEdited.connect(self._on_tags_edited)
        self.tags_panel.classAdded.connect(self._on_class_added)
        layers = self.layers_panel
        layers.layerChanged.connect(self._refresh_layer)
        layers.classChanged.connect(self._refresh_layer)
        layers.colormapChanged.connect(self._refresh_layer)
        layers.opacityChanged.connect(self.canvas.set_opacity)
        layers.maskVisibleChanged.connect(self.canvas.set_mask_visible)
        toolbar = self.edit_toolbar
        toolbar.toolChanged.connect(self.canvas.set_tool)
        toolbar.radiusChanged.connect(self.canvas.set_brush_radius)
        toolbar.paintValueChanged.connect(self.canvas.set_paint_value)
        toolbar.undoRequested.connect(self.undo)
        toolbar.redoRequested.connect(self.redo)
        toolbar.acceptPseudoRequested.connect(self.accept_pseudo_label)
        toolbar.saveRequested.connect(self.save_current)
        self.canvas.set_brush_radius(toolbar.radius())
        self.canvas.set_tool(toolbar.tool())
        self.canvas.maskEdited.connect(self._on_mask_edited)
        self.canvas.zoomChanged.connect(lambda s: self.zoom_label.setText(f"{s:.0%}"))
        self.canvas.cursorMoved.connect(self._on_cursor_moved)
        panel = self.training_panel
        panel.startRequested.connect(lambda: self.start_training(resume=False))
        panel.resumeRequested.connect(lambda: self.start_training(resume=True))
        panel.stopRequested.connect(self.stop_training)
        panel.runSelected.connect(self._on_run_selected)
        inference = self.inference
        inference.loaded.connect(self._on_model_loaded)
        inference.loadFailed.connect(lambda run, msg: self.report(f"cannot load the model of {run}: {msg}", True))
        inference.predicted.connect(self._on_predicted)
        inference.predictFailed.connect(self._on_predict_failed)
        inference.scanProgress.connect(self.image_list.set_sort_progress)
        inference.scanned.connect(self.project.set_uncertainty)
        inference.scanFinished.connect(self._on_scan_finished)

    # ---------------------------------------------------------- settings
    def _restore_settings(self) -> None:
        geometry = self.settings.value("window/geometry")
        if isinstance(geometry, QByteArray):
            self.restoreGeometry(geometry)
        state = self.settings.value("window/state")
        if isinstance(state, QByteArray):
            self.restoreState(state)
        self.layers_panel.set_opacity(float(self.settings.value("view/opacity", self.layers_panel.opacity())))
        self.layers_panel.set_colormap(str(self.settings.value("view/colormap", self.layers_panel.colormap())))
        self.canvas.set_opacity(self.layers_panel.opacity())

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

    # ------------------------------------------------------------ project
    def _choose_folder(self) -> None:
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
        if self.training_panel.is_running():
            self.show_error("Open folder", "Stop the training before opening another folder.")
            return False
        if not self._resolve_unsaved("opening another folder"):
            return False
        self._stop_validation()
        self._cancel_review_scan()
        try:
            self.project.open(path)
        except (FolderError, OSError, ValueError) as exc:
            self.show_error("Cannot open folder", str(exc))
            return False
        project = self.project
        self.settings.setValue("lastFolder", str(project.root))
        self._stem = ""
        self.setWindowTitle(f"{APP_TITLE} — {project.root}")
        self.image_list.set_entries([project.entry(s) for s in project.stems()], project.class_names)
        self._on_classes_changed()
        self.training_panel.set_project_open(True)
        self.report(f"opened {project.root} ({project.folder.layout} layout, {len(project.stems())} images, "
                    f"{len(project.class_names)} classes)")
        for problem in project.problems:
            self.report(problem, error=True)
        remembered = self.settings.value(self._run_key())
        runs = project.runs()
        selected = next((r for r in runs if r.name == remembered), runs[0] if runs else None)
        self.training_panel.set_runs(runs, selected)
        self._on_run_selected(str(selected) if selected else "")
        self._start_validation()
        stems = self.image_list.visible_stems()
        if stems:
            self.image_list.select_stem(stems[0])
        else:
            self.show_image("")
        return True

    def _on_classes_changed(self) -> None:
        names = self.project.class_names
        self.tags_panel.set_classes(names)
        self.image_list.set_class_names(names)
        if self._stem:
            self.tags_panel.set_image(self._stem, self.project.tags(self._stem))
        self._update_class_pickers()

    def _update_class_pickers(self) -> None:
        tags = self.project.tag_indices(self._stem) if self._stem else []
        names = self.project.class_names
        self.edit_toolbar.set_classes([(BACKGROUND, "background")] + [(i, names[i - 1]) for i in tags])
        self.layers_panel.set_classes(names, tags)

    def _on_entry_changed(self, stem: str) -> None:
        self.image_list.update_entry(self.project.entry(stem))

    def _start_validation(self) -> None:
        images = [(stem, self.project.image_path(stem)) for stem in self.project.stems()]
        worker = ValidationWorker(images)
        worker.bad.connect(self._on_bad_image)
        thread = start_thread(worker, self, worker.finished)
        self._validation = (thread, worker)

    def _stop_validation(self) -> None:
        if self._validation is not None:
            thread, worker = self._validation
            worker.cancel()
            thread.quit()
            thread.wait()
            self._validation = None

    def _on_bad_image(self, stem: str, message: str) -> None:
        if self.project.is_open() and not self.project.error(stem):
            self.project.set_error(stem, message)
            self.report(message, error=True)

    # -------------------------------------------------------------- image
    def current_stem(self) -> str:
        return self._stem

    def show_image(self, stem: str) -> None:
        """Make ``stem`` the current image (edits of the previous one stay in memory)."""
        if stem == self._stem and stem:
            return
        if self.canvas.document() is not None:
            self.canvas.document().end_stroke()
        self.project.release_clean_documents(keep=stem)
        self._stem, self._image = stem, None
        self.canvas.set_document(None)
        self.canvas.set_overlay(None)
        if not stem:
            self.canvas.set_image(None)
            self.tags_panel.set_image(None, [])
            self.layers_panel.set_busy(False)
            return
        self.tags_panel.set_image(stem, self.project.tags(stem))
        self._update_class_pickers()
        path = self.project.image_path(stem)
        try:
            self._image = load_image(path, max_side=None)
        except ImageLoadError as exc:
            self.project.set_error(stem, str(exc))
            self.canvas.set_image(None)
            self.canvas.set_message(f"This image cannot be shown:\n{exc}")
            self.report(str(exc), error=True)
            self._update_history()
            self.layers_panel.set_busy(False)
            return
        self.canvas.set_image(self._image)
        shape = self._image.shape[:2]
        try:
            doc = self.project.open_document(stem, shape)
        except ImageLoadError as exc:
            self.report(f"{exc}; starting from an empty mask", error=True)
            doc = self.project.open_document(stem, shape, start_empty=True)
        self.canvas.set_document(doc)
        self._update_history()
        self._refresh_layer()
        self._request_prediction()

    def _request_prediction(self) -> None:
        stem = self._stem
        if not stem or self._image is None or self.project.prediction(stem) is not None:
            self.layers_panel.set_busy(False)
            return
        if self.inference.predictor is None:
            if not self.inference.loading_run:
                self.layers_panel.set_busy(False, "No trained run selected: train a model to see CAMs.")
            return
        self.layers_panel.set_busy(True, "Running inference for this image ...")
        tags = tuple(self.project.tag_indices(stem)) if self.project.is_tagged(stem) else None
        self.inference.predict(stem, self.project.image_path(stem), tags)

    def _current_request(self, request: PredictRequest) -> bool:
        """True when ``request`` is for an image of the open project with its current tags."""
        stem = request.stem
        if not self.project.is_open() or stem not in self.project.stems():
            return False
        tags = tuple(self.project.tag_indices(stem)) if self.project.is_tagged(stem) else None
        return self.project.image_path(stem) == request.image_path and tags == request.tags

    def _on_predicted(self, request: PredictRequest, prediction) -> None:
        if not self._current_request(request):
            return
        self.project.set_prediction(request.stem, prediction)
        if request.stem == self._stem:
            self.layers_panel.set_busy(False)
            self._refresh_layer()

    def _on_predict_failed(self, request: PredictRequest, message: str) -> None:
        if request.stem == self._stem:
            self.layers_panel.set_busy(False, "Inference failed (see the log).")
        self.report(f"inference for {request.stem} failed: {message}", error=True)

    def _refresh_layer(self) -> None:
        """Recompute the overlay of the selected layer for the current image."""
        stem, image = self._stem, self._image
        if not stem or image is None:
            self.layers_panel.set_note("")
            self.canvas.set_overlay(None)
            return
        prediction = self.project.prediction(stem)
        gt_path = self.project.gt_path(stem)
        available = {"image"} | (set(PREDICTION_LAYERS) if prediction is not None else set())
        if gt_path is not None:
            available.add("gt")
        self.layers_panel.set_available(available)
        layer = self.layers_panel.layer()
        if layer not in available:
            self.layers_panel.set_note(f"{dict(LAYERS)[layer]}: not available for this image "
                                       "(no prediction or ground truth yet).")
            self.canvas.set_overlay(None)
            return
        gt = None
        if layer == "gt":
            try:
                gt = load_mask(gt_path, shape=image.shape[:2])
            except ImageLoadError as exc:
                self.report(str(exc), error=True)
        panel = self.layers_panel
        panel.set_note(layer_note(layer, prediction, panel.cam_class(), self.project.class_names))
        self.canvas.set_overlay(layer_rgba(layer, image.shape[:2], prediction, panel.cam_class(), panel.colormap(), gt))

    # ------------------------------------------------------------ editing
    def _update_history(self) -> None:
        doc = self.canvas.document()
        self.edit_toolbar.set_history(bool(doc and doc.can_undo), bool(doc and doc.can_redo))

    def _on_mask_edited(self) -> None:
        self._update_history()
        self.project.notify_edited(self._stem)

    def undo(self) -> None:
        doc = self.canvas.document()
        if doc is not None and doc.undo():
            self.canvas.refresh_mask()
            self._on_mask_edited()

    def redo(self) -> None:
        doc = self.canvas.document()
        if doc is not None and doc.redo():
            self.canvas.refresh_mask()
            self._on_mask_edited()

    def accept_pseudo_label(self) -> None:
        """Replace the mask with the current pseudo-label (undoable)."""
        doc, prediction = self.canvas.document(), self.project.prediction(self._stem)
        if doc is None or prediction is None:
            self.report("no pseudo-label for this image yet (train a model, or wait for inference)")
            return
        if doc.set_all(resize_to(prediction.pseudo_label, doc.shape, nearest=True)):
            self.canvas.refresh_mask()
            self._on_mask_edited()

    def save_current(self) -> bool:
        """Save the current mask to ``verified/<stem>.png`` (asks before replacing a changed file)."""
        return bool(self._stem and self.canvas.document() is not None and self._save(self._stem))

    def _save(self, stem: str) -> bool:
        try:
            path = self.project.save_document(stem)
        except VerifiedMaskConflict as exc:
            answer = self.ask("Verified mask changed on disk", f"{exc}\n\nOverwrite it with your edits?",
                              QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
                              QMessageBox.StandardButton.No)
            if answer != QMessageBox.StandardButton.Yes:
                return False
            path = self.project.save_document(stem, force=True)
        except (OSError, ValueError) as exc:
            self.show_error("Save failed", f"{stem}: cannot save the verified mask ({exc})")
            return False
        self.report(f"saved {path}")
        return True

    def _resolve_unsaved(self, doing: str) -> bool:
        """Ask what to do with unsaved masks; False when the user cancels."""
        unsaved = self.project.unsaved_stems()
        if not unsaved:
            return True
        names = ", ".join(unsaved[:8]) + (" ..." if len(unsaved) > 8 else "")
        buttons = (QMessageBox.StandardButton.SaveAll | QMessageBox.StandardButton.Discard
                   | QMessageBox.StandardButton.Cancel)
        answer = self.ask("Unsaved masks", f"{len(unsaved)} image(s) have unsaved edits ({names}).\n"
                          f"Save them before {doing}?", buttons, QMessageBox.StandardButton.SaveAll)
        if answer == QMessageBox.StandardButton.SaveAll:
            return all(self._save(stem) for stem in unsaved)
        if answer == QMessageBox.StandardButton.Discard:
            for stem in unsaved:
                self.project.discard_document(stem)
            return True
        return False

    # -------------------------------------------------------------- tags
    def _on_tags_edited(self, tags: list[str]) -> None:
        stem = self._stem
        try:
            self.project.set_tags(stem, tags)
        except (OSError, ValueError, KeyError) as exc:
            self.show_error("Tags not saved", f"{self.project.root / 'tags.csv'}: {exc}")
            return
        self.report(f"{stem}: tags {', '.join(tags) or '(none)'} saved to tags.csv")
        self._update_class_pickers()
        self._refresh_layer()
        self._request_prediction()

    def _on_class_added(self, name: str) -> None:
        try:
            index = self.project.add_class(name)
        except (OSError, ValueError) as exc:
            self.show_error("Class not added", str(exc))
            return
        self._on_classes_changed()
        self.report(f"class {index} '{name}' added to classes.txt")

    # ----------------------------------------------------------- training
    def start_training(self, resume: bool = False) -> None:
        """Train a new run (or resume the selected one) in a background thread."""
        if not self.project.is_open() or self._train_thread is not None:
            return
        if resume:
            run_dir = self.training_panel.selected_run()
            if run_dir is None:
                return
        else:
            run_dir = self.project.new_run_dir()
        try:
            cfg = self.training_panel.config()
        except (KeyError, ValueError) as exc:
            self.show_error("Training settings", str(exc))
            return
        worker = TrainWorker(cfg, self.project.root, run_dir, resume=resume)
        worker.event.connect(self._on_train_event)
        worker.finished.connect(self._on_train_finished)
        worker.failed.connect(self._on_train_failed)
        self._train_worker, self._train_result = worker, ""
        self._train_thread = start_thread(worker, self, worker.finished, worker.failed)
        self._train_thread.finished.connect(self._on_train_thread_done)
        self.training_panel.set_running(True)
        self.report(("resuming " if resume else "training ") + str(run_dir))

    def stop_training(self) -> None:
        if self._train_worker is not None:
            self._train_worker.cancel()
            self.report("stopping after the current iteration ...")

    def is_training(self) -> bool:
        return self._train_thread is not None

    def _on_train_event(self, event: TrainEvent) -> None:
        self.training_panel.show_event(event)
        if event.message and event.kind != "progress":
            self.log_view.append_message(event.message)
        self.trainingEvent.emit(event)

    def _on_train_finished(self, run_dir: str) -> None:
        self._train_result = run_dir
        self.report(f"run ready: {run_dir}")

    def _on_train_failed(self, message: str) -> None:
        self._train_result = ""
        self.show_error("Training failed", message)

    def _on_train_thread_done(self) -> None:
        self._train_thread, self._train_worker = None, None
        self.training_panel.set_running(False)
        result = self._train_result
        self._select_run(Path(result) if result else self.training_panel.selected_run())
        self.trainingFinished.emit(result)

    def _select_run(self, run_dir: Path | None) -> None:
        runs = self.project.runs()
        selected = run_dir if run_dir in runs else (runs[0] if runs else None)
        self.training_panel.set_runs(runs, selected)
        self._on_run_selected(str(selected) if selected else "")

    def _on_run_selected(self, run_dir: str) -> None:
        """Use ``run_dir`` for CAMs and pseudo-labels (remembered per project)."""
        self._cancel_review_scan()
        self.project.clear_predictions()
        for stem in self.project.stems():
            self._on_entry_changed(stem)
        self._refresh_layer()
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
        self._request_prediction()

    # -------------------------------------------------------- review order
    def compute_review_order(self) -> None:
        """Predict every image in the background and sort the list by uncertainty, worst first."""
        if not self.project.is_open():
            return
        if self.inference.predictor is None:
            self.show_error("Review order", "The review order needs a trained run: train a model first.")
            return
        self.image_list.set_sort_progress(0, len(self.project.folder.samples))
        self.report("computing pseudo-label uncertainty for every image ...")
        self.inference.scan(self.project.folder)

    def _cancel_review_scan(self) -> None:
        self.inference.cancel_scan()
        self.image_list.set_sort_progress(0, 0)

    def _on_scan_finished(self, problems: list[str]) -> None:
        self.image_list.set_sort_progress(1, 1)
        for problem in problems:
            self.report(problem, error=True)
            stem = self.project.stem_for_problem(problem)
            if stem is not None:
                self.project.set_error(stem, problem)
        self.image_list.set_sort_by_uncertainty(True)
        self.report("list sorted by uncertainty (most unsure pixels first)")

    # ------------------------------------------------------------- export
    def show_export_dialog(self) -> ExportDialog | None:
        """Open the export dialog (after asking about unsaved masks)."""
        if not self.project.is_open() or not self._resolve_unsaved("exporting"):
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

    def closeEvent(self, event: QCloseEvent) -> None:  # noqa: N802 - Qt API
        if self._train_thread is not None:
            answer = self.ask("Training is running", "Stop the training and quit? The last checkpoint is kept.",
                              QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
                              QMessageBox.StandardButton.No)
            if answer != QMessageBox.StandardButton.Yes:
                event.ignore()
                return
        if not self._resolve_unsaved("quitting"):
            event.ignore()
            return
        if self._train_thread is not None:
            self.report("stopping the training ...")
            self._train_worker.cancel()
            self._train_thread.wait()
        if self.export_dialog is not None:
            self.export_dialog.wait()
        self._stop_validation()
        self.inference.shutdown()
        self._save_settings()
        event.accept()
