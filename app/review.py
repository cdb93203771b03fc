"""Review order: score every image in the background (share of unsure pseudo-label pixels) and sort
the image list worst first. The list shows the progress and a Cancel button; a cancelled scan keeps
the scores computed so far.
"""
from __future__ import annotations

from PySide6.QtCore import QObject

from app.image_list import ImageList
from app.messages import Messages
from app.project import Project
from app.workers import InferenceClient


class ReviewOrder(QObject):
    """Wires the image list's review controls to the inference thread's folder scan."""

    def __init__(self, project: Project, inference: InferenceClient, image_list: ImageList, messages: Messages,
                 parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._project, self._inference, self._image_list, self._messages = project, inference, image_list, messages
        image_list.uncertaintyRequested.connect(self.start)
        image_list.reviewCancelRequested.connect(self.cancel)
        inference.scanProgress.connect(image_list.set_sort_progress)
        inference.scanned.connect(project.set_uncertainty)
        inference.scanFinished.connect(self._on_finished)

    def start(self) -> None:
        """Predict every image in the background and sort the list by uncertainty, worst first."""
        project, inference = self._project, self._inference
        if not project.is_open():
            return
        if inference.predictor is None:
            self._messages.show_error("Review order", "The review order needs a trained run: train a model first.")
            return
        self._image_list.set_sort_progress(0, len(project.folder.samples))
        self._messages.report("computing pseudo-label uncertainty for every image ...")
        inference.scan(project.folder)

    def cancel(self) -> None:
        """Stop the scan (if any); the images scored so far keep their score."""
        if self._inference.scanning:
            self._messages.report("review order cancelled; the images scored so far keep their score")
        self._inference.cancel_scan()
        self._image_list.set_sort_progress(0, 0)

    def _on_finished(self, problems: list[str]) -> None:
        self._image_list.set_sort_progress(1, 1)
        for problem in problems:
            self._messages.report(problem, error=True)
            stem = self._project.stem_for_problem(problem)
            if stem is not None:
                self._project.set_error(stem, problem)
        self._image_list.set_sort_by_uncertainty(True)
        self._messages.report("list sorted by uncertainty (most unsure pixels first)")
