"""Training, resuming and quick updates of the selected run, one at a time, in a background thread.

Wires the training panel to `TrainWorker`: events go to the panel, the log and `event`; when a
thread ends, the run is selected (its model reloaded) and `finished` carries the run folder ("" on
failure). An update asked for while another runs is queued (at most one). A stop only asks the
trainer to end after its current iteration, so the GUI never waits on it.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtCore import QObject, QThread, Signal

from app.workers import TrainWorker, start_thread
from oste_core.engine.run_folder import RunFolder
from oste_core.engine.trainer import TrainEvent

if TYPE_CHECKING:
    from app.main_window import MainWindow

UPDATE_BUDGET_S = 45.0  # seconds of training per update: suggestions refresh within a minute on a laptop


class TrainingControl(QObject):
    """Owns the training thread of the main window."""

    event = Signal(object)  # every TrainEvent of the running training or update
    finished = Signal(str)  # the run folder, "" when the training failed
    stopped = Signal()  # the thread ended (after `finished`)

    def __init__(self, window: MainWindow) -> None:
        super().__init__(window)
        self._window = window
        self._thread: QThread | None = None
        self._worker: TrainWorker | None = None
        self._result = ""  # run folder of the last training ("" when it failed)
        self._update_queued = False
        self.stopping = False
        self.update_budget_s = UPDATE_BUDGET_S

    def is_running(self) -> bool:
        return self._thread is not None

    def start(self, resume: bool = False) -> None:
        """Train a new run (or resume the selected one)."""
        window = self._window
        if not window.project.is_open() or self._thread is not None:
            return
        run_dir = window.training_panel.selected_run() if resume else window.project.new_run_dir()
        if run_dir is not None:
            self._launch(run_dir, resume=resume, update=False)

    def request_update(self) -> None:
        """Continue the selected run briefly on the verified masks; queued when a training runs."""
        window = self._window
        if not window.project.is_open() or self.stopping or window.closing:
            return
        if self._thread is not None:
            self._update_queued = True
            window.report("an update will follow the one running now")
            return
        run_dir = window.training_panel.selected_run()
        if run_dir is None or not RunFolder(run_dir).is_finished():
            window.report("nothing to update: train a run to the end first", error=True)
            return
        self._launch(run_dir, resume=False, update=True)

    def _launch(self, run_dir: Path, resume: bool, update: bool) -> None:
        window = self._window
        if window.project.read_only:
            window.show_error("Opened read-only", f"{window.project.root}: opened read-only, so nothing is trained "
                              "into its runs/ folder; close the other session and open the folder again to train")
            return
        try:
            cfg = window.training_panel.config()
        except (KeyError, ValueError) as exc:
            window.show_error("Training settings", str(exc))
            return
        worker = TrainWorker(cfg, window.project.root, run_dir, resume=resume,
                             update_budget_s=self.update_budget_s if update else None)
        worker.event.connect(self._on_event)
        worker.finished.connect(self._on_finished)
        worker.failed.connect(self._on_failed)
        self._worker, self._result = worker, ""
        self._thread = start_thread(worker, self, worker.finished, worker.failed)
        self._thread.finished.connect(self._on_thread_done)
        window.training_panel.set_running(True, self.update_budget_s if update else None)
        verb = "updating" if update else ("resuming" if resume else "training")
        window.report(f"{verb} {run_dir}")

    def stop(self) -> None:
        """Ask the running training to stop after its current iteration (returns at once)."""
        if self._worker is not None:
            self._update_queued = False
            self._worker.cancel()
            self.stopping = True
            self._window.training_panel.set_stopping()
            self._window.report("stopping after the current iteration …")

    def _on_event(self, event: TrainEvent) -> None:
        self._window.training_panel.show_event(event)
        if event.message and event.kind != "progress":
            self._window.log_view.append_message(event.message)
        self.event.emit(event)

    def _on_finished(self, run_dir: str) -> None:
        self._result = run_dir
        self._window.report(f"run ready: {run_dir}")

    def _on_failed(self, message: str) -> None:
        self._result = ""
        self._update_queued = False
        self._window.show_error("Training failed", message)

    def _on_thread_done(self) -> None:
        window = self._window
        self._thread, self._worker = None, None
        window.training_panel.set_running(False)
        quitting, self.stopping = window.closing, False
        if not quitting:
            result = self._result
            window.select_run(Path(result) if result else window.training_panel.selected_run())
        self.finished.emit(self._result)
        self.stopped.emit()
        if self._update_queued and not quitting:
            self._update_queued = False
            self.request_update()
