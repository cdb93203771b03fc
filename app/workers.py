"""Background work for the GUI: worker objects moved to QThreads, talking through Qt signals.

* `TrainWorker`: runs the core `Trainer`, a full run or a short update (cooperative stop via `Trainer.cancel`).
* `InferenceClient`: one long-lived thread with a `Predictor`; single-image predictions (stale
  requests are skipped), the review-order scan over the folder (`Predictor.predict_folder`) and the
  refresh after a correction (`oste_core.suggest.refresh`; a newer one cancels it, and single-image
  requests are served between its images).
* `ExportWorker`: runs the core `export_folder` (the export ``oste export`` runs).
* `ValidationWorker`: decodes every image once, so unreadable ones get their error badge early.

The workers never touch widgets; every result crosses back to the GUI thread as a queued signal.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PySide6.QtCore import QObject, Qt, QThread, Signal, Slot

from oste_core.config import OSTEConfig
from oste_core.data import ImageLoadError, LabelledFolder, check_image, load_image
from oste_core.editing import uncertainty_score
from oste_core.engine.predictor import Predictor
from oste_core.engine.trainer import Trainer, TrainEvent
from oste_core.export import ExportExistsError, export_folder
from oste_core.suggest.refresh import refresh_suggestions


def describe(exc: BaseException) -> str:
    """A one-line message for a dialog: the exception's own text (its type when it has none)."""
    return str(exc) or type(exc).__name__


def start_thread(worker: QObject, parent: QObject, *done_signals: Signal,
                 on_done: Callable[[], None] | None = None) -> QThread:
    """Move ``worker`` to a new thread that calls ``worker.run`` and quits on any of ``done_signals``; ``on_done``
    runs in the GUI thread once the thread has ended (connected before the start: a worker that fails at once
    may end its thread before the caller could connect to ``finished``)."""
    thread = QThread(parent)
    worker.moveToThread(thread)
    thread.started.connect(worker.run)
    for signal in done_signals:  # direct: quit even while the GUI thread blocks in wait()
        signal.connect(thread.quit, Qt.ConnectionType.DirectConnection)
    if on_done is not None:
        thread.finished.connect(on_done)
    thread.start()
    return thread


PROGRESS_INTERVAL_S = 0.05


class TrainWorker(QObject):
    """Trains one run, or updates it for ``update_budget_s`` seconds on the verified masks
    (`Trainer.run_update`); `event` carries each `TrainEvent`, then `finished` or `failed`."""

    event = Signal(object)  # TrainEvent
    finished = Signal(str)  # run folder
    failed = Signal(str)  # message

    def __init__(self, cfg: OSTEConfig, data_dir: Path, run_dir: Path, resume: bool = False,
                 update_budget_s: float | None = None) -> None:
        super().__init__()
        self._cfg, self._data_dir, self._run_dir, self._resume = cfg, data_dir, run_dir, resume
        self._update_budget_s = update_budget_s
        self._lock = threading.Lock()
        self._last_progress = float("-inf")
        self._trainer: Trainer | None = None
        self._cancelled = False

    @Slot()
    def run(self) -> None:
        try:
            trainer = Trainer(self._cfg, self._data_dir, self._run_dir, on_event=self._forward)
            with self._lock:
                self._trainer = trainer
                if self._cancelled:
                    trainer.cancel()
            if self._update_budget_s is not None:
                run_dir = trainer.run_update(self._update_budget_s)
            else:
                run_dir = trainer.run(resume=self._resume)
        except Exception as exc:  # noqa: BLE001 - any failure becomes a dialog, the app stays usable
            self.failed.emit(describe(exc))
        else:
            self.finished.emit(str(run_dir))

    def _forward(self, event: TrainEvent) -> None:
        """Pass events to the GUI thread, progress at most every ``PROGRESS_INTERVAL_S`` except the last
        step (tiny images can train hundreds of iterations a second; a flood of queued signals only
        repaints the same plot)."""
        now = time.monotonic()
        last_step = event.iteration >= event.total > 0
        if event.kind == "progress" and not last_step and now - self._last_progress < PROGRESS_INTERVAL_S:
            return  # the first and the last step always reach the GUI, so the bar and plot end complete
        if event.kind == "progress":
            self._last_progress = now
        self.event.emit(event)

    def cancel(self) -> None:
        """Thread-safe: stop after the current iteration (the trainer keeps a checkpoint)."""
        with self._lock:
            self._cancelled = True
            if self._trainer is not None:
                self._trainer.cancel()


@dataclass(frozen=True)
class PredictRequest:
    """One image to predict: its stem, file and 1-based tags (None: untagged, let the model guess).

    ``generation`` counts model (re)loads: results of an older model or project are dropped.
    ``corrections``: the image's sparse corrections (255 = none), seeds of its suggestion.
    """

    stem: str
    image_path: Path
    tags: tuple[int, ...] | None
    generation: int = 0
    corrections: np.ndarray | None = field(default=None, compare=False)


class _InferenceWorker(QObject):
    loaded = Signal(str, object)  # run folder, Predictor
    loadFailed = Signal(str, str)  # run folder, message
    predicted = Signal(object, object)  # PredictRequest, Prediction
    predictFailed = Signal(object, str)  # PredictRequest, message
    scanProgress = Signal(int, int, int)  # done, total, generation
    scanned = Signal(str, float, int)  # stem, uncertainty, generation
    scanFinished = Signal(list, int)  # problem lines of unreadable images, generation
    refreshed = Signal(str, object, int, int, int)  # stem, Prediction, done, total, generation
    refreshFinished = Signal(object, int)  # RefreshReport, generation
    refreshFailed = Signal(str, int)  # message, generation

    def __init__(self) -> None:
        super().__init__()
        self.predictor: Predictor | None = None
        self.wanted: PredictRequest | None = None  # the latest request; older ones are skipped
        self._served: PredictRequest | None = None  # the last request predicted
        self.scan_cancel = threading.Event()
        self.refresh_wanted = 0  # the latest refresh's generation; older ones stop
        self._changed: set[str] = set()  # stems changed since the last refit

    @Slot(str, str)
    def load_run(self, run_dir: str, device: str) -> None:
        self.predictor = None
        self._changed.clear()
        try:
            predictor = Predictor.from_run(run_dir, device=device)
        except Exception as exc:  # noqa: BLE001
            self.loadFailed.emit(run_dir, describe(exc))
            return
        self.predictor = predictor
        self.loaded.emit(run_dir, predictor)

    @Slot(object)
    def predict(self, request: PredictRequest) -> None:
        if request is not self.wanted or request is self._served or self.predictor is None:
            return
        self._served = request
        try:
            image = load_image(request.image_path, max_side=self.predictor.max_side)
            tags = list(request.tags) if request.tags is not None else None
            prediction = self.predictor.predict(image, tags, key=request.stem, image_path=request.image_path,
                                                corrections=request.corrections)
        except Exception as exc:  # noqa: BLE001 - unreadable image or inference failure: shown, not raised
            self.predictFailed.emit(request, describe(exc))
            return
        self.predicted.emit(request, prediction)

    @Slot(object, list, str, list, int)
    def refresh(self, folder: LabelledFolder, changed: list[str], current: str, stems: list[str],
                generation: int) -> None:
        """Refit with the ``changed`` stems (and those of refreshes cancelled before their refit), then
        re-predict ``stems``, ``current`` first; stops when a newer refresh is asked for."""
        self._changed.update(changed)
        if generation != self.refresh_wanted or self.predictor is None:
            return
        changed, self._changed = sorted(self._changed), set()
        done = 0

        def on_prediction(stem: str, prediction) -> None:
            nonlocal done
            done += 1
            self.refreshed.emit(stem, prediction, done, len(stems), generation)

        def cancel() -> bool:
            if self.wanted is not None and self.wanted is not self._served:
                self.predict(self.wanted)  # the image the user just opened goes first
            return generation != self.refresh_wanted

        try:
            report = refresh_suggestions(self.predictor, folder, changed, current, stems, on_prediction, cancel)
        except Exception as exc:  # noqa: BLE001 - reported in the log, the app stays usable
            self.refreshFailed.emit(describe(exc), generation)
            return
        self.refreshFinished.emit(report, generation)

    @Slot(object, int)
    def scan(self, folder: LabelledFolder, generation: int) -> None:
        predictor = self.predictor
        if predictor is None:
            self.scanFinished.emit(["no trained run is loaded: train a model first"], generation)
            return
        self.scan_cancel.clear()
        known = len(predictor.problems)
        problems: list[str] = []
        try:
            progress = lambda done, total: self.scanProgress.emit(done, total, generation)  # noqa: E731
            for sample, prediction in predictor.predict_folder(folder, progress, self.scan_cancel.is_set):
                self.scanned.emit(sample.stem, uncertainty_score(prediction.pseudo_label), generation)
        except Exception as exc:  # noqa: BLE001
            problems.append(describe(exc))
        self.scanFinished.emit(predictor.problems[known:] + problems, generation)


class InferenceClient(QObject):
    """GUI-side handle of the inference thread; all methods return at once.

    Results that belong to an older model (a run or project that is no longer selected) are
    dropped here, so the window only ever sees results of the current model.
    """

    loaded = Signal(str)  # run folder
    loadFailed = Signal(str, str)
    predicted = Signal(object, object)  # PredictRequest, Prediction
    predictFailed = Signal(object, str)  # PredictRequest, message
    scanProgress = Signal(int, int)
    scanned = Signal(str, float)
    scanFinished = Signal(list)
    refreshed = Signal(str, object, int, int)  # stem, Prediction, done, total
    refreshFinished = Signal(object)  # RefreshReport
    refreshFailed = Signal(str)
    _load = Signal(str, str)
    _predict = Signal(object)
    _scan = Signal(object, int)
    _refresh = Signal(object, list, str, list, int)

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._thread = QThread(self)
        self._worker = _InferenceWorker()
        self._worker.moveToThread(self._thread)
        self._load.connect(self._worker.load_run)
        self._predict.connect(self._worker.predict)
        self._scan.connect(self._worker.scan)
        self._refresh.connect(self._worker.refresh)
        self._worker.refreshed.connect(self._on_refreshed)
        self._worker.refreshFinished.connect(self._on_refresh_finished)
        self._worker.refreshFailed.connect(self._on_refresh_failed)
        self._worker.loaded.connect(self._on_loaded)
        self._worker.loadFailed.connect(self._on_load_failed)
        self._worker.predicted.connect(self._on_predicted)
        self._worker.predictFailed.connect(self._on_predict_failed)
        self._worker.scanProgress.connect(self._on_scan_progress)
        self._worker.scanned.connect(self._on_scanned)
        self._worker.scanFinished.connect(self._on_scan_finished)
        self.predictor: Predictor | None = None
        self.run_dir = ""
        self.loading_run = ""  # the run being loaded, "" when none
        self.generation = 0
        self.scanning = False
        self.refresh_generation = 0
        self.refreshing = False
        self._thread.start()

    def load_run(self, run_dir: str | Path, device: str = "auto") -> None:
        """Load a run's model in the background (`loaded` / `loadFailed`)."""
        self.unload()
        self.loading_run = str(run_dir)
        self._load.emit(str(run_dir), device)

    def unload(self) -> None:
        """Forget the model (no run selected); pending results are dropped."""
        self.predictor, self.run_dir, self.loading_run = None, "", ""
        self.generation += 1
        self.cancel_scan()
        self.cancel_refresh()

    def _on_loaded(self, run_dir: str, predictor: Predictor) -> None:
        if run_dir != self.loading_run:
            return  # another run was chosen meanwhile; its load follows
        self.predictor, self.run_dir, self.loading_run = predictor, run_dir, ""
        self.loaded.emit(run_dir)

    def _on_load_failed(self, run_dir: str, message: str) -> None:
        if run_dir == self.loading_run:
            self.loading_run = ""
            self.loadFailed.emit(run_dir, message)

    def predict(self, stem: str, image_path: Path, tags: tuple[int, ...] | None,
                corrections: np.ndarray | None = None) -> PredictRequest:
        """Predict one image (``corrections``: its strokes, 255 = none); earlier requests that have not
        started are dropped."""
        request = PredictRequest(stem, image_path, tags, self.generation, corrections)
        self._worker.wanted = request
        self._predict.emit(request)
        return request

    def _on_predicted(self, request: PredictRequest, prediction) -> None:
        if request.generation == self.generation:
            self.predicted.emit(request, prediction)

    def _on_predict_failed(self, request: PredictRequest, message: str) -> None:
        if request.generation == self.generation:
            self.predictFailed.emit(request, message)

    def scan(self, folder: LabelledFolder) -> None:
        """Predict every sample for the review order (`scanProgress`, `scanned`, `scanFinished`)."""
        self.scanning = True
        self._scan.emit(folder, self.generation)

    def cancel_scan(self) -> None:
        self.scanning = False
        self._worker.scan_cancel.set()

    def _on_scan_progress(self, done: int, total: int, generation: int) -> None:
        if self.scanning and generation == self.generation:
            self.scanProgress.emit(done, total)

    def _on_scanned(self, stem: str, score: float, generation: int) -> None:
        if self.scanning and generation == self.generation:
            self.scanned.emit(stem, score)

    def _on_scan_finished(self, problems: list, generation: int) -> None:
        if self.scanning and generation == self.generation:
            self.scanning = False
            self.scanFinished.emit(problems)

    def refresh(self, folder: LabelledFolder, changed: list[str], current: str, stems: list[str]) -> None:
        """Refit with the annotator's pixels of ``changed`` and re-predict ``stems`` (``current`` first, then
        the next in list order): `refreshed` per image, then `refreshFinished`; cancels an older refresh."""
        self.cancel_refresh()
        self.refreshing = True
        self._refresh.emit(folder, list(changed), current, list(stems), self.refresh_generation)

    def cancel_refresh(self) -> None:
        """Stop the refresh in progress at its next image (thread-safe: a counter the worker reads)."""
        self.refreshing = False
        self.refresh_generation += 1
        self._worker.refresh_wanted = self.refresh_generation

    def _on_refreshed(self, stem: str, prediction, done: int, total: int, generation: int) -> None:
        if self.refreshing and generation == self.refresh_generation:
            self.refreshed.emit(stem, prediction, done, total)

    def _on_refresh_finished(self, report, generation: int) -> None:
        if self.refreshing and generation == self.refresh_generation:
            self.refreshing = False
            self.refreshFinished.emit(report)

    def _on_refresh_failed(self, message: str, generation: int) -> None:
        if self.refreshing and generation == self.refresh_generation:
            self.refreshing = False
            self.refreshFailed.emit(message)

    def shutdown(self) -> None:
        """Stop the thread (waits for the prediction in progress)."""
        self.cancel_refresh()
        self._worker.scan_cancel.set()
        self._worker.wanted = None
        self._thread.quit()
        self._thread.wait()


class ExportWorker(QObject):
    """Runs the core `export_folder`, the same export as ``oste export``; `exists` when the
    target already holds an export (checked before any prediction runs)."""

    progress = Signal(int, int)
    finished = Signal(object)  # ExportSummary
    exists = Signal(str)  # message of ExportExistsError: ask, then rerun with overwrite=True
    failed = Signal(str)

    def __init__(self, folder: LabelledFolder, predictor: Predictor | None, source: str, prefer_verified: bool,
                 out_dir: Path, formats: tuple[str, ...], overwrite: bool) -> None:
        super().__init__()
        self._folder, self._predictor = folder, predictor
        self._source, self._prefer_verified = source, prefer_verified  # source: one of oste_core.export.SOURCES
        self._out_dir, self._formats, self._overwrite = out_dir, formats, overwrite

    @Slot()
    def run(self) -> None:
        try:
            summary = export_folder(self._folder, self._out_dir, self._formats, what=self._source,
                                    predictor=self._predictor, prefer_verified=self._prefer_verified,
                                    overwrite=self._overwrite, on_progress=self.progress.emit)
        except ExportExistsError as exc:
            self.exists.emit(describe(exc))
        except Exception as exc:  # noqa: BLE001 - shown in the dialog
            self.failed.emit(describe(exc))
        else:
            self.finished.emit(summary)


class ValidationWorker(QObject):
    """Decodes each image once (in the background) and reports the unreadable ones."""

    bad = Signal(str, str)  # stem, message
    finished = Signal()

    def __init__(self, images: list[tuple[str, Path]]) -> None:
        super().__init__()
        self._images = images
        self._cancel = threading.Event()

    @Slot()
    def run(self) -> None:
        for stem, path in self._images:
            if self._cancel.is_set():
                break
            try:
                check_image(path)
            except ImageLoadError as exc:
                self.bad.emit(stem, str(exc))
        self.finished.emit()

    def cancel(self) -> None:
        self._cancel.set()
