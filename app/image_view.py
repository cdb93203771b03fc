"""The current image: shows it in the canvas with its edit document and the selected layer, and
asks the inference thread for its prediction (results for another image or older tags are dropped).

The suggestion layer is drawn under a corrections document (an image that is not verified: its strokes
are drawn over it, and a re-prediction with them is asked for after each, `request_prediction(fresh=True)`),
but not under a full mask of the user's own (verified on disk, or accepted): then the user's mask is the
overlay, so erased areas never show the suggestion through.
"""
from __future__ import annotations

import numpy as np
from PySide6.QtCore import QObject, Signal

from app.canvas import Canvas
from app.layers_dock import LAYERS, PREDICTION_LAYERS, LayersPanel, layer_note, layer_rgba
from app.messages import Messages
from app.project import Project
from app.style import resize_to
from app.workers import InferenceClient, PredictRequest
from oste_core.data import ImageLoadError, load_image, load_mask
from oste_core.engine.predictor import Prediction
from oste_core.labels import UNSURE
from oste_core.suggest.corrections import corrections_path, load_corrections


class ImageView(QObject):
    """Which image is shown (``stem``, its pixels ``image``) and what is drawn over it."""

    imageChanged = Signal(str)  # the new current stem ("" for none)
    documentShown = Signal()  # the canvas holds the new image's document (none when the image cannot be read)

    def __init__(self, project: Project, inference: InferenceClient, canvas: Canvas, layers_panel: LayersPanel,
                 messages: Messages, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._project, self._inference, self._canvas, self._panel = project, inference, canvas, layers_panel
        self._messages = messages
        self.stem = ""
        self.image: np.ndarray | None = None
        self._request: PredictRequest | None = None  # the latest request for the current image
        inference.predicted.connect(self._on_predicted)
        inference.predictFailed.connect(self._on_predict_failed)
        panel = layers_panel
        for signal in (panel.layerChanged, panel.classChanged, panel.colormapChanged, panel.maskVisibleChanged):
            signal.connect(self.refresh_layer)
        panel.opacityChanged.connect(canvas.set_opacity)
        panel.maskVisibleChanged.connect(canvas.set_mask_visible)

    def show(self, stem: str) -> None:
        """Make ``stem`` the current image (edits of the previous one stay in memory)."""
        canvas, project = self._canvas, self._project
        if stem == self.stem and stem:
            return
        if canvas.document() is not None:
            canvas.document().end_stroke()
        project.release_clean_documents(keep=stem)
        self.stem, self.image = stem, None
        canvas.set_document(None)
        canvas.set_overlay(None)
        self.imageChanged.emit(stem)
        if not stem:
            canvas.set_image(None)
            self._panel.set_busy(False)
            return
        try:
            self.image = load_image(project.image_path(stem), max_side=None)
        except ImageLoadError as exc:
            project.set_error(stem, str(exc))
            canvas.set_image(None)
            canvas.set_message(f"This image cannot be shown:\n{exc}")
            self._messages.report(str(exc), error=True)
            self.documentShown.emit()
            self._panel.set_busy(False)
            return
        canvas.set_image(self.image)
        shape = self.image.shape[:2]
        try:
            doc = project.open_document(stem, shape)
        except ImageLoadError as exc:
            self._messages.report(f"{exc}; starting from an empty mask", error=True)
            doc = project.open_document(stem, shape, start_empty=True)
        canvas.set_document(doc)
        self.documentShown.emit()
        self.refresh_layer()
        self.request_prediction()

    def request_prediction(self, fresh: bool = False) -> None:
        """Predict the current image unless its prediction is cached (``fresh``: again, with the document's
        corrections as they are now; the shown suggestion stays until the new one arrives)."""
        project, stem = self._project, self.stem
        if not stem or self.image is None or (not fresh and project.prediction(stem) is not None):
            self._panel.set_busy(False)
            return
        if self._inference.predictor is None:
            if not self._inference.loading_run:
                self._panel.set_busy(False, "No trained run selected: train a model to see CAMs.")
            return
        self._panel.set_busy(True, "Updating the suggestion with your corrections ..." if fresh
                             else "Running inference for this image ...")
        tags = tuple(project.tag_indices(stem)) if project.is_tagged(stem) else None
        doc = self._canvas.document()
        corrections = doc.mask.copy() if doc is not None and doc.sparse and (doc.mask != UNSURE).any() else None
        self._request = self._inference.predict(stem, project.image_path(stem), tags, corrections)

    def _current_request(self, request: PredictRequest) -> bool:
        """True when ``request`` is for an image of the open project with its current tags."""
        project, stem = self._project, request.stem
        if not project.is_open() or stem not in project.stems():
            return False
        tags = tuple(project.tag_indices(stem)) if project.is_tagged(stem) else None
        return project.image_path(stem) == request.image_path and tags == request.tags

    def _on_predicted(self, request: PredictRequest, prediction: Prediction) -> None:
        if not self._current_request(request) or (request.stem == self.stem and request is not self._request):
            return  # another image's, or older than the corrections shown
        self._project.set_prediction(request.stem, prediction)
        if request.stem == self.stem:
            self._panel.set_busy(False)
            self.refresh_layer()

    def _on_predict_failed(self, request: PredictRequest, message: str) -> None:
        if request.stem == self.stem:
            self._panel.set_busy(False, "Inference failed (see the log).")
        self._messages.report(f"inference for {request.stem} failed: {message}", error=True)

    def _has_user_mask(self) -> bool:
        doc = self._canvas.document()
        return doc is not None and not doc.sparse and (doc.disk_mtime_ns is not None or doc.dirty or doc.can_undo)

    def _corrections(self, shape: tuple[int, int]) -> np.ndarray | None:
        """The current image's corrections: the document's, else (a verified image) its file's, if any."""
        project, doc = self._project, self._canvas.document()
        if doc is not None and doc.sparse:
            return doc.mask if (doc.mask != UNSURE).any() else None
        if not corrections_path(project.root, self.stem).is_file():
            return None
        try:
            return load_corrections(project.root, self.stem, shape)
        except ImageLoadError as exc:
            self._messages.report(str(exc), error=True)
            return None

    def refresh_layer(self, *_signal_args: object) -> None:
        """Recompute the overlay of the selected layer for the current image."""
        project, stem, image = self._project, self.stem, self.image
        panel, canvas = self._panel, self._canvas
        if not stem or image is None:
            panel.set_note("")
            canvas.set_overlay(None)
            return
        prediction = project.prediction(stem)
        doc = canvas.document()
        sparse = doc is not None and doc.sparse
        canvas.set_suggestion(resize_to(prediction.suggestion, image.shape[:2], nearest=True)
                              if sparse and prediction is not None else None)
        gt_path = project.gt_path(stem)
        available = {"image"} | (set(PREDICTION_LAYERS) if prediction is not None else set())
        if gt_path is not None:
            available.add("gt")
        layer = panel.layer()
        corrections = self._corrections(image.shape[:2]) if layer == "corrections" or sparse else None
        if corrections is not None or corrections_path(project.root, stem).is_file():
            available.add("corrections")
        panel.set_available(available)
        if layer not in available:
            panel.set_note(f"{dict(LAYERS)[layer]}: not available for this image (no prediction or ground truth yet).")
            canvas.set_overlay(None)
            return
        if layer == "suggestion" and panel.mask_visible() and self._has_user_mask():
            panel.set_note("Your mask is shown instead of the suggestion (untick 'Show edited mask' to compare).")
            canvas.set_overlay(None)
            return
        gt = None
        if layer == "gt":
            try:
                gt = load_mask(gt_path, shape=image.shape[:2])
            except ImageLoadError as exc:
                self._messages.report(str(exc), error=True)
        panel.set_note(layer_note(layer, prediction, panel.cam_class(), project.class_names))
        canvas.set_overlay(layer_rgba(layer, image.shape[:2], prediction, panel.cam_class(), panel.colormap(), gt,
                                      corrections))
