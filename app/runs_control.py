"""Which run's model the GUI uses for CAMs, pseudo-labels and suggestions: the one chosen in the training
panel, remembered per project in the settings, loaded in the inference thread."""
from __future__ import annotations

import hashlib
from pathlib import Path

from PySide6.QtCore import QObject, QSettings

from app.image_list import ImageList
from app.image_view import ImageView
from app.layers_dock import LayersPanel
from app.messages import Messages
from app.project import Project
from app.review import ReviewOrder
from app.training_panel import TrainingPanel
from app.workers import InferenceClient


class RunsControl(QObject):
    """Loads the selected run's model; its predictions replace the previous run's everywhere."""

    def __init__(self, project: Project, inference: InferenceClient, view: ImageView, review: ReviewOrder,
                 training_panel: TrainingPanel, layers_panel: LayersPanel, image_list: ImageList,
                 settings: QSettings, messages: Messages, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._project, self._inference, self._view, self._review = project, inference, view, review
        self._panel, self._layers_panel, self._image_list = training_panel, layers_panel, image_list
        self._settings, self._messages = settings, messages
        training_panel.runSelected.connect(self._on_run_selected)
        inference.loaded.connect(self._on_model_loaded)
        inference.loadFailed.connect(lambda run, msg: messages.report(f"cannot load the model of {run}: {msg}", True))

    def _run_key(self) -> str:
        """Settings key of the run chosen for this project (keys may not contain path separators)."""
        return "runs/" + hashlib.sha1(str(self._project.root).encode("utf-8")).hexdigest()[:16]

    def show_project_runs(self) -> None:
        """List the opened project's runs and load the one used last time (else the newest)."""
        selected = self._project.preferred_run(self._settings.value(self._run_key()))
        self._panel.set_runs(self._project.runs(), selected)
        self._on_run_selected(str(selected) if selected else "")

    def select_run(self, run_dir: Path | None) -> None:
        """List the project's runs and load ``run_dir`` (else the newest)."""
        runs = self._project.runs()
        selected = run_dir if run_dir in runs else (runs[0] if runs else None)
        self._panel.set_runs(runs, selected)
        self._on_run_selected(str(selected) if selected else "")

    def _on_run_selected(self, run_dir: str) -> None:
        """Use ``run_dir`` for CAMs, pseudo-labels and suggestions (remembered per project)."""
        project = self._project
        self._review.cancel()
        project.clear_predictions()
        for stem in project.stems():
            self._image_list.update_entry(project.entry(stem))
        self._view.refresh_layer()
        if not run_dir:
            self._inference.unload()
            self._layers_panel.set_busy(False, "No trained run yet: train a model to see CAMs.")
            return
        self._settings.setValue(self._run_key(), Path(run_dir).name)
        self._layers_panel.set_busy(True, f"Loading the model of run {Path(run_dir).name} ...")
        self._inference.load_run(run_dir, self._panel.device.currentText())

    def _on_model_loaded(self, run_dir: str) -> None:
        self._messages.report(f"model of run {Path(run_dir).name} loaded")
        self._layers_panel.set_busy(False)
        self._view.request_prediction()
