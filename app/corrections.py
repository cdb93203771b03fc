"""Corrections that count: each finished stroke on an image that is not verified is saved at once to
``corrections/<stem>.png``, the current image is re-predicted with it, and every suggestion is refreshed.

    stroke (or undo/redo) on a corrections document -> EditorControl.save (asks if the file changed on disk)
      -> ImageView.request_prediction(fresh=True)     the current image with its strokes as seeds (no refit)
      -> InferenceClient.refresh                        refit, the current image, the next 5, then the rest

A verified save (Ctrl+S) refreshes too. A newer correction cancels the refresh in progress and starts a new
one; everything runs in the inference thread, the status bar shows the progress.
"""
from __future__ import annotations

from PySide6.QtCore import QObject
from PySide6.QtWidgets import QStatusBar

from app.editor import EditorControl
from app.image_list import ImageList
from app.image_view import ImageView
from app.messages import Messages
from app.project import Project
from app.refresh_indicator import RefreshIndicator
from app.workers import InferenceClient
from oste_core.engine.predictor import Prediction
from oste_core.suggest.refresh import NEXT_FIRST, RefreshReport


class CorrectionsControl(QObject):
    """Saves corrections as they are drawn and keeps the suggestions refreshed after each correction."""

    def __init__(self, project: Project, inference: InferenceClient, editor: EditorControl, view: ImageView,
                 image_list: ImageList, status_bar: QStatusBar, messages: Messages,
                 parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._project, self._inference, self._editor, self._view = project, inference, editor, view
        self._image_list, self._messages = image_list, messages
        self.indicator = RefreshIndicator()
        status_bar.insertPermanentWidget(0, self.indicator)
        editor.maskChanged.connect(self._on_mask_changed)
        editor.userSaved.connect(self.refresh)
        inference.refreshed.connect(self._on_refreshed)
        inference.refreshFinished.connect(self._on_finished)
        inference.refreshFailed.connect(self._on_failed)
        inference.loaded.connect(lambda _run: self.indicator.finish())

    def _on_mask_changed(self) -> None:
        """Save the current corrections document when it has unsaved strokes, then refresh."""
        stem = self._view.stem
        doc = self._project.document(stem) if stem else None
        if doc is None or not doc.sparse or not doc.dirty or not self._editor.save(stem):
            return
        self._view.request_prediction(fresh=True)
        self.refresh(stem)

    def refresh(self, changed: str) -> None:
        """Refit with the user's pixels of ``changed`` and re-predict every tagged image, the current one
        first, then those after it in the list (as shown), then the rest."""
        project = self._project
        if self._inference.predictor is None or not project.is_open():
            return
        shown = [stem for stem in self._image_list.visible_stems() if project.is_tagged(stem)]
        listed = set(shown)
        stems = shown + [stem for stem in project.stems() if project.is_tagged(stem) and stem not in listed]
        self._inference.refresh(project.folder, [changed] if project.is_tagged(changed) else [], self._view.stem,
                                stems)
        self.indicator.show_progress(0, len(stems))

    def _on_refreshed(self, stem: str, prediction: Prediction, done: int, total: int) -> None:
        """Show the current image's new suggestion; keep those of the next images, score the others."""
        project = self._project
        if not project.is_open() or stem not in project.stems():
            return
        if done <= 1 + NEXT_FIRST or stem == self._view.stem:
            project.set_prediction(stem, prediction)
        else:
            project.drop_prediction(stem)  # recomputed (from the predictor's cache) when it is opened
        project.set_uncertainty(stem, prediction.uncertainty)
        if stem == self._view.stem:
            self._view.refresh_layer()
        self.indicator.show_progress(done, total)

    def _on_finished(self, report: RefreshReport) -> None:
        self.indicator.finish()
        for problem in report.problems:
            self._messages.report(problem, error=True)
        refit = f"pixel classifier refitted in {report.refit_s:.1f} s, " if report.refit else ""
        self._messages.report(f"{refit}{report.refreshed} suggestions refreshed in {report.refresh_s:.1f} s")

    def _on_failed(self, message: str) -> None:
        self.indicator.finish()
        self._messages.report(f"refreshing the suggestions failed: {message}", error=True)
