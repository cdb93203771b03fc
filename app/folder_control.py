"""The open folder: opening one (the file dialog, the demo project, read-only when another session holds it),
checking its images in the background, the export dialog, and what quitting waits for.

Opening first asks about a running training and unsaved masks, then shows the new project everywhere: the
lists (`TagsControl`), the runs (`RunsControl`, the one used last time is loaded) and its first image.
"""
from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QObject, QSettings, Signal
from PySide6.QtWidgets import QFileDialog, QMessageBox, QWidget

from app.editor import EditorControl
from app.export_dialog import ExportDialog
from app.folder_conflicts import FolderConflicts
from app.image_list import ImageList
from app.image_view import ImageView
from app.messages import Messages
from app.project import Project, demo_location, ensure_demo
from app.review import ReviewOrder
from app.runs_control import RunsControl
from app.tags_control import TagsControl
from app.training_control import TrainingControl
from app.workers import InferenceClient, ValidationWorker, start_thread
from oste_core.data import FolderError

APP_TITLE = "OSTE Studio"
Button = QMessageBox.StandardButton


class FolderControl(QObject):
    """Opens folders into ``project`` and closes the session; its dialogs open over ``parent``."""

    titleChanged = Signal(str)  # the window title: the app and the open folder

    def __init__(self, *, project: Project, inference: InferenceClient, settings: QSettings, messages: Messages,
                 conflicts: FolderConflicts, editor: EditorControl, training: TrainingControl, review: ReviewOrder,
                 view: ImageView, tags: TagsControl, runs: RunsControl, image_list: ImageList,
                 parent: QWidget) -> None:
        super().__init__(parent)
        self._project, self._inference, self._settings, self._messages = project, inference, settings, messages
        self._conflicts, self._editor, self._training, self._review = conflicts, editor, training, review
        self._view, self._tags, self._runs, self._image_list = view, tags, runs, image_list
        self._parent = parent
        self._validation: tuple = ()  # (QThread, ValidationWorker) while images are checked
        self.export_dialog: ExportDialog | None = None

    def choose_folder(self) -> None:
        """*File > Open folder...*: pick a folder (starting at the last one) and open it."""
        start = str(self._settings.value("lastFolder", str(Path.home())))
        folder = QFileDialog.getExistingDirectory(self._parent, "Open a labelled folder", start)
        if folder:
            self.open_folder(folder)

    def open_demo(self) -> bool:
        """Create the synthetic demo project in the user's data folder (once) and open it."""
        path = demo_location()
        self._messages.report(f"preparing the demo project in {path} ...")
        try:
            ensure_demo(path)
        except (OSError, ValueError) as exc:
            self._messages.show_error("Demo project", f"{path}: cannot write the demo data ({exc})")
            return False
        return self.open_folder(path)

    def open_folder(self, path: str | Path) -> bool:
        """Open a labelled folder (native, VOC or subfolders); False when it could not be opened."""
        messages = self._messages
        if self._training.is_running():
            messages.show_error("Open folder", "Stop the training before opening another folder.")
            return False
        if not self._editor.resolve_unsaved("opening another folder"):
            return False
        self._stop_validation()
        self._review.cancel()
        try:
            if not self._conflicts.open_project(path):
                return False
        except (FolderError, OSError, ValueError, RuntimeError) as exc:
            messages.show_error("Cannot open folder", str(exc))
            return False
        project = self._project
        self._settings.setValue("lastFolder", str(project.root))
        self._view.show("")
        self.titleChanged.emit(f"{APP_TITLE} — {project.root}" + (" (read-only)" if project.read_only else ""))
        self._tags.show_project_contents()
        messages.report(f"opened {project.root} ({project.folder.layout} layout, {len(project.stems())} images, "
                        f"{len(project.class_names)} classes)" + ("; read-only" if project.read_only else ""))
        for problem in project.problems:
            messages.report(problem, error=True)
        self._runs.show_project_runs()
        self._start_validation()
        stems = self._image_list.visible_stems()
        if stems:
            self._image_list.select_stem(stems[0])
        return True

    def _start_validation(self) -> None:
        images = [(stem, self._project.image_path(stem)) for stem in self._project.stems()]
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
        if self._project.is_open() and not self._project.error(stem):
            self._project.set_error(stem, message)
            self._messages.report(message, error=True)

    def show_export_dialog(self) -> ExportDialog | None:
        """Open the export dialog (after asking about unsaved masks)."""
        if not self._project.is_open() or not self._editor.resolve_unsaved("exporting"):
            return None
        self.export_dialog = ExportDialog(self._project.folder, self._inference.predictor, self._parent)
        self.export_dialog.finishedMessage.connect(self._messages.report)
        self.export_dialog.open()
        return self.export_dialog

    def prepare_quit(self) -> bool:
        """True when the app may quit now: the export has ended and the folder is released. A running training
        is asked to stop first (never waited for: the window closes once it stopped) and False returned."""
        training, editor = self._training, self._editor
        if training.is_running():
            if not training.quitting:
                answer = self._messages.ask("Training is running",
                                            "Stop the training and quit? The last checkpoint is kept.",
                                            Button.Yes | Button.No, Button.No)
                if answer != Button.Yes or not editor.resolve_unsaved("quitting"):
                    return False
                training.stop_to_quit()
            return False
        if not editor.resolve_unsaved("quitting"):
            training.quitting = False
            return False
        if self.export_dialog is not None:
            self.export_dialog.wait()
        self._stop_validation()
        self._inference.shutdown()
        self._project.close()
        return True
