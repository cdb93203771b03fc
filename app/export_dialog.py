"""Export dialog over the core `export_folder` (the export ``oste export`` runs): target folder,
formats, mask source, progress, summary.

The export runs in a background thread. An existing export is only replaced after asking
(`ExportExistsError` -> question -> rerun with ``overwrite=True``), and the target may never be
the project's ``verified/`` folder. The default source is the suggestion, a full mask an
annotator can accept; the FBE pseudo-labels leave unsure pixels (255), which labelme gets as
``__ignore__`` and CVAT as a label ``unsure`` (the note under the formats says so).
"""
from __future__ import annotations

import time
from pathlib import Path

from PySide6.QtCore import QThread, Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QMessageBox,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from app.style import icon
from app.workers import ExportWorker, start_thread
from oste_core.data import LabelledFolder
from oste_core.engine.predictor import Predictor
from oste_core.export import CVAT_UNSURE_NOTE, ExportSummary

FORMATS = [("voc", "VOC palette PNG"), ("labelme", "labelme JSON"), ("cvat", "CVAT zip")]
# keys are oste_core.export.SOURCES, as ``oste export --what`` takes them
SOURCES = [("suggestion", "Suggestion (full mask)"), ("pseudo", "Pseudo-labels (FBE, with unsure pixels)"),
           ("seg", "Segmentation prediction"), ("verified", "Verified masks only")]
UNSURE_NOTE = {
    "pseudo": "Unsure pixels (255) stay unsure: VOC 255, labelme __ignore__; " + CVAT_UNSURE_NOTE + ".",
    "verified": "Unsure pixels you painted stay unsure: VOC 255, labelme __ignore__; " + CVAT_UNSURE_NOTE + ".",
}


def describe_summary(summary: ExportSummary) -> str:
    """First line: where and how many per format; then every skipped image, problem and note."""
    counts = ", ".join(f"{fmt} {count}" for fmt, count in summary.counts.items())
    lines = [f"Exported to {summary.out_dir}: {counts} image(s); {len(summary.skipped)} skipped"]
    lines += [f"skipped: {line}" for line in summary.skipped] + summary.problems + summary.notes
    return "\n".join(lines)


class ExportDialog(QDialog):
    """Choose where and what to export; shows progress and a summary when done."""

    finishedMessage = Signal(str)

    def __init__(self, folder: LabelledFolder, predictor: Predictor | None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Export masks")
        self.setMinimumWidth(520)
        self._folder, self._predictor = folder, predictor
        self._thread: QThread | None = None
        self._worker: ExportWorker | None = None
        self._exists_message = ""  # set when the target holds an export: ask once the thread is done

        self.target = QLineEdit(str(folder.root / "exports" / time.strftime("%Y%m%d-%H%M%S")))
        browse = QPushButton(icon("fa5s.folder-open"), "")
        browse.setToolTip("Choose the target folder")
        browse.clicked.connect(self._browse)
        target_row = QHBoxLayout()
        target_row.addWidget(self.target, 1)
        target_row.addWidget(browse)
        self.format_boxes: dict[str, QCheckBox] = {}
        format_row = QHBoxLayout()
        for key, title in FORMATS:
            box = QCheckBox(title)
            box.setChecked(key == "voc")
            self.format_boxes[key] = box
            format_row.addWidget(box)
        self.source = QComboBox()
        for key, title in SOURCES:
            self.source.addItem(title, key)
        self.prefer_verified = QCheckBox("Use verified masks where present")
        self.prefer_verified.setChecked(True)
        self.unsure_note = QLabel()
        self.unsure_note.setWordWrap(True)
        self.source.currentIndexChanged.connect(lambda _i: self._on_source_changed())
        if predictor is None:
            self.source.setCurrentIndex(self.source.findData("verified"))
        self._on_source_changed()

        form = QFormLayout()
        form.addRow("Target folder", target_row)
        form.addRow("Formats", format_row)
        form.addRow("Masks", self.source)
        form.addRow("", self.prefer_verified)
        form.addRow("", self.unsure_note)
        self.progress = QProgressBar()
        self.progress.setValue(0)
        self.summary = QPlainTextEdit()
        self.summary.setReadOnly(True)
        self.summary.setMaximumHeight(110)
        self.summary.setPlaceholderText("The summary of the export appears here.")
        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        self.export_button = self.buttons.addButton("Export", QDialogButtonBox.ButtonRole.ActionRole)
        self.export_button.setIcon(icon("fa5s.file-export"))
        self.export_button.setDefault(True)
        self.export_button.clicked.connect(lambda: self.start())
        self.buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.progress)
        layout.addWidget(self.summary)
        layout.addWidget(self.buttons)

    def _on_source_changed(self) -> None:
        source = self.source.currentData()
        self.prefer_verified.setEnabled(source != "verified")
        self.unsure_note.setText(UNSURE_NOTE.get(source, ""))
        self.unsure_note.setVisible(source in UNSURE_NOTE)

    def _browse(self) -> None:
        chosen = QFileDialog.getExistingDirectory(self, "Export to", self.target.text())
        if chosen:
            self.target.setText(chosen)

    def formats(self) -> tuple[str, ...]:
        return tuple(key for key, box in self.format_boxes.items() if box.isChecked())

    def is_running(self) -> bool:
        return self._thread is not None

    def _problem(self, out_dir: Path) -> str:
        """Why the export cannot start ("" when it can)."""
        if not self.target.text().strip():
            return "Choose a target folder."
        if not self.formats():
            return "Choose at least one format."
        if self.source.currentData() != "verified" and self._predictor is None:
            return "Predicted masks need a trained run: train a model first, or export verified masks only."
        return ""

    def start(self, overwrite: bool = False) -> bool:
        """Start the export in the background; False (with the reason shown) when it cannot start."""
        if self._thread is not None:
            return False
        out_dir = Path(self.target.text().strip()).expanduser().resolve()
        problem = self._problem(out_dir)
        if problem:
            self.summary.setPlainText(problem)
            return False
        worker = ExportWorker(self._folder, self._predictor, self.source.currentData(),
                              self.prefer_verified.isChecked(), out_dir, self.formats(), overwrite)
        worker.progress.connect(self._on_progress)
        worker.finished.connect(self._on_finished)
        worker.exists.connect(self._on_exists)
        worker.failed.connect(self._on_failed)
        self._worker = worker
        self._thread = start_thread(worker, self, worker.finished, worker.exists, worker.failed,
                                    on_done=self._on_thread_done)
        self._set_inputs_enabled(False)
        self.progress.setRange(0, 0)
        self.progress.setFormat("checking the target ...")
        self.summary.setPlainText(f"Exporting to {out_dir} ...")
        return True

    def wait(self) -> None:
        """Block until a running export has finished."""
        if self._thread is not None:
            self._thread.wait()

    def _set_inputs_enabled(self, enabled: bool) -> None:
        for widget in (self.target, self.source, self.prefer_verified, self.export_button, *self.format_boxes.values()):
            widget.setEnabled(enabled)
        if enabled:
            self._on_source_changed()

    def _on_progress(self, done: int, total: int) -> None:
        self.progress.setFormat("exporting %v / %m")
        self.progress.setRange(0, max(total, 1))
        self.progress.setValue(done)

    def _on_finished(self, summary: ExportSummary) -> None:
        text = describe_summary(summary)
        self.summary.setPlainText(text)
        self.progress.setFormat("done")
        self.progress.setRange(0, 1)
        self.progress.setValue(1)
        self.finishedMessage.emit(text.splitlines()[0])

    def _on_exists(self, message: str) -> None:
        self._exists_message = message

    def _on_failed(self, message: str) -> None:
        self.summary.setPlainText(f"Export failed: {message}")
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.finishedMessage.emit(f"export failed: {message}")

    def _on_thread_done(self) -> None:
        self._thread, self._worker = None, None
        self._set_inputs_enabled(True)
        question, self._exists_message = self._exists_message, ""
        if question:
            self.progress.setRange(0, 1)
            self.progress.setValue(0)
            answer = QMessageBox.question(self, "Export exists", f"{question}\n\nReplace the existing export?",
                                          QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
                                          QMessageBox.StandardButton.No)
            if answer == QMessageBox.StandardButton.Yes:
                self.start(overwrite=True)
            else:
                self.summary.setPlainText(f"Not exported: {question}")

    def reject(self) -> None:
        if self._thread is not None:
            self.summary.appendPlainText("The export is still running; close the dialog when it is done.")
            return
        super().reject()
