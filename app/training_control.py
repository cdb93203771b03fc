"""Training, resuming and quick updates of the selected run, one at a time, in a background thread.

Wires the training panel to `TrainWorker`: events go to the panel, the log and `event`; when a
thread ends, `runEnded` names the run to select (its model reloaded) and `finished` carries the run
folder ("" on failure). An update asked for while another runs is queued (at most one). A stop only
asks the trainer to end after its current iteration, so the GUI never waits on it; `stop_to_quit`
marks that the app quits once the thread has ended (`stopped`).
"""
from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QObject, QThread, Signal

from app.messages import Messages
from app.project import Project
from app.training_panel import TrainingPanel
from app.workers import TrainWorker, start_thread
from oste_core.engine.run_folder import RunFolder
from oste_core.engine.trainer import TrainEvent

UPDATE_BUDGET_S = 45.0  # seconds of training per update: suggestions refresh within a minute on a laptop


class TrainingControl(QObject):
    """Owns the training thread and answers the training panel's buttons."""

    event = Signal(object)  # every TrainEvent of the running training or update
    runEnded = Signal(object)  # the run to select once a thread ended (its folder; None: the newest), unless quitting
    finished = Signal(str)  # the run folder, "" when the training failed
    stopped = Signal()  # the thread ended (after `finished`)

    def __init__(self, project: Project, panel: TrainingPanel, messages: Messages,
                 parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._project, self._panel, self._messages = project, panel, messages
        self._thread: QThread | None = None
        self._worker: TrainWorker | None = None
        self._result = ""  # run folder of the last training ("" when it failed)
        self._update_queued = False
        self.stopping = False
        self.quitting = False  # the user chose to quit: stop, and neither select the run nor update afterwards
        self.update_budget_s = UPDATE_BUDGET_S
        panel.startRequested.connect(lambda: self.start(resume=False))
        panel.resumeRequested.connect(lambda: self.start(resume=True))
        panel.updateRequested.connect(self.request_update)
        panel.stopRequested.connect(self.stop)
        project.opened.connect(self._on_project_opened)
        panel.set_project_open(False)

    def _on_project_opened(self) -> None:
        self._panel.reset()
        self._panel.set_project_open(True)

    def is_running(self) -> bool:
        """True while a training or update thread runs."""
        return self._thread is not None

    def start(self, resume: bool = False) -> None:
        """Train a new run (or resume the selected one)."""
        if not self._project.is_open() or self._thread is not None:
            return
        run_dir = self._panel.selected_run() if resume else self._project.new_run_dir()
        if run_dir is not None:
            self._launch(run_dir, resume=resume, update=False)

    def request_update(self) -> None:
        """Continue the selected run briefly on the verified masks; queued when a training runs."""
        if not self._project.is_open() or self.stopping or self.quitting:
            return
        if self._thread is not None:
            self._update_queued = True
            self._messages.report("an update will follow the one running now")
            return
        run_dir = self._panel.selected_run()
        if run_dir is None or not RunFolder(run_dir).is_finished():
            self._messages.report("nothing to update: train a run to the end first", error=True)
            return
        self._launch(run_dir, resume=False, update=True)

    def update_after_save(self, _stem: str) -> None:
        """A verified mask was saved: update the run when the panel's auto-update is ticked."""
        if self._panel.auto_update.isChecked():
            self.request_update()

    def _launch(self, run_dir: Path, resume: bool, update: bool) -> None:
        project, messages = self._project, self._messages
        if project.read_only:
            messages.show_error("Opened read-only", f"{project.root}: opened read-only, so nothing is trained "
                                "into its runs/ folder; close the other session and open the folder again to train")
            return
        try:
            cfg = self._panel.config()
        except (KeyError, ValueError) as exc:
            messages.show_error("Training settings", str(exc))
            return
        worker = TrainWorker(cfg, project.root, run_dir, resume=resume,
                             update_budget_s=self.update_budget_s if update else None)
        worker.event.connect(self._on_event)
        worker.finished.connect(self._on_finished)
        worker.failed.connect(self._on_failed)
        self._worker, self._result = worker, ""
        self._thread = start_thread(worker, self, worker.finished, worker.failed, on_done=self._on_thread_done)
        self._panel.set_running(True, self.update_budget_s if update else None)
        verb = "updating" if update else ("resuming" if resume else "training")
        messages.report(f"{verb} {run_dir}")

    def stop(self) -> None:
        """Ask the running training to stop after its current iteration (returns at once)."""
        if self._worker is not None:
            self._update_queued = False
            self._worker.cancel()
            self.stopping = True
            self._panel.set_stopping()
            self._messages.report("stopping after the current iteration …")

    def stop_to_quit(self) -> None:
        """Stop the training because the app quits; `stopped` follows when its current iteration has ended."""
        self.quitting = True
        self.stop()
        self._messages.report("stopping the training … the window closes when the current iteration ends")

    def _on_event(self, event: TrainEvent) -> None:
        self._panel.show_event(event)
        if event.message and event.kind != "progress":
            self._messages.log(event.message)
        self.event.emit(event)

    def _on_finished(self, run_dir: str) -> None:
        self._result = run_dir
        self._messages.report(f"run ready: {run_dir}")

    def _on_failed(self, message: str) -> None:
        self._result = ""
        self._update_queued = False
        self._messages.show_error("Training failed", message)

    def _on_thread_done(self) -> None:
        self._thread, self._worker = None, None
        self._panel.set_running(False)
        quitting, self.stopping = self.quitting, False
        if not quitting:
            result = self._result
            self.runEnded.emit(Path(result) if result else self._panel.selected_run())
        self.finished.emit(self._result)
        self.stopped.emit()
        if self._update_queued and not quitting:
            self._update_queued = False
            self.request_update()
