"""Review order: score every image in the background (share of unsure pseudo-label pixels) and sort
the image list worst first. The list shows the progress and a Cancel button; a cancelled scan keeps
the scores computed so far.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from PySide6.QtCore import QObject

if TYPE_CHECKING:
    from app.main_window import MainWindow


class ReviewOrder(QObject):
    """Wires the image list's review controls to the inference thread's folder scan."""

    def __init__(self, window: MainWindow) -> None:
        super().__init__(window)
        self._window = window
        window.image_list.uncertaintyRequested.connect(self.start)
        window.image_list.reviewCancelRequested.connect(self.cancel)
        inference = window.inference
        inference.scanProgress.connect(window.image_list.set_sort_progress)
        inference.scanned.connect(window.project.set_uncertainty)
        inference.scanFinished.connect(self._on_finished)

    def start(self) -> None:
        """Predict every image in the background and sort the list by uncertainty, worst first."""
        w = self._window
        if not w.project.is_open():
            return
        if w.inference.predictor is None:
            w.show_error("Review order", "The review order needs a trained run: train a model first.")
            return
        w.image_list.set_sort_progress(0, len(w.project.folder.samples))
        w.report("computing pseudo-label uncertainty for every image ...")
        w.inference.scan(w.project.folder)

    def cancel(self) -> None:
        """Stop the scan (if any); the images scored so far keep their score."""
        w = self._window
        if w.inference.scanning:
            w.report("review order cancelled; the images scored so far keep their score")
        w.inference.cancel_scan()
        w.image_list.set_sort_progress(0, 0)

    def _on_finished(self, problems: list[str]) -> None:
        w = self._window
        w.image_list.set_sort_progress(1, 1)
        for problem in problems:
            w.report(problem, error=True)
            stem = w.project.stem_for_problem(problem)
            if stem is not None:
                w.project.set_error(stem, problem)
        w.image_list.set_sort_by_uncertainty(True)
        w.report("list sorted by uncertainty (most unsure pixels first)")
