"""Training settings, Train/Stop/Resume/Update, progress (the job's phase, done / total, the whole job's ETA,
images/s), the live loss plot, the run list and the selected run's size on disk.

"Update" continues the selected run for a short time with the verified masks as full supervision;
"Update after each save" asks for one after every saved mask.
"""
from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QSizePolicy,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from app.loss_plot import LossPlot
from app.style import icon
from oste_core.config import TRAINING_MODES, OSTEConfig, apply_overrides, default_config
from oste_core.utils.device import pick_device
from oste_core.engine.run_folder import CHECKPOINT, RunFolder
from oste_core.engine.trainer import TrainEvent
from oste_core.models.backbones import available_backbones

MODE_LABELS = {"fast": "Fast (frozen backbone)", "full": "Full fine-tuning", "paper": "Paper's settings"}
PASS_NAMES = {"features": "features", "priors": "priors", "probe": "pixel classifier",
              "affinity": "MAF affinity", "suggestions": "suggestions"}  # progress bar labels of passes without a phase (all cached, say)


def format_duration(seconds: float) -> str:
    """Seconds -> "h:mm:ss" (or "m:ss" under an hour)."""
    seconds = max(int(round(seconds)), 0)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class TrainingPanel(QWidget):
    """Builds the training config from its widgets and shows the progress of a run."""

    startRequested = Signal()
    stopRequested = Signal()
    resumeRequested = Signal()
    updateRequested = Signal()
    runSelected = Signal(str)  # run folder ("" when none)

    def __init__(self, devices: list[str], parent: QWidget | None = None) -> None:
        super().__init__(parent)
        defaults = self._defaults = default_config(pick_device("auto").type)
        self._extra: dict[str, object] = {}

        self.mode = QComboBox()
        for mode in TRAINING_MODES:
            self.mode.addItem(MODE_LABELS[mode], mode)
        self.mode.setToolTip("Fast: the ImageNet backbone stays frozen and its features are cached (minutes, the "
                             "class priors of the suggestion). Full fine-tuning trains the backbone too (the paper's "
                             "schedule on a GPU). Choosing a mode resets the fields below to its defaults.")
        self.mode.currentIndexChanged.connect(self._on_mode_changed)

        self.backbone = QComboBox()
        self.backbone.addItems(available_backbones())
        self.backbone.setCurrentText(defaults.model.backbone)
        self.backbone.setToolTip("Feature extractor; the default has offline ImageNet weights")
        self.device = QComboBox()
        self.device.addItems(devices)
        self.device.setToolTip("auto: CUDA when present, else CPU")
        self.iters = self._spin(1, 1_000_000, defaults.train.iters, "Training iterations")
        self.batch = self._spin(1, 256, defaults.train.batch, "Images per iteration")
        self.crop = self._spin(32, 2048, defaults.train.crop, "Random crop size (px)")
        self.alpha = self._double(0.0, 1.0, defaults.model.alpha, "FBE background threshold alpha (Eq 12)")
        self.gamma = self._double(0.1, 20.0, defaults.model.gamma, "FBE exponent gamma (Eq 10)")
        self.use_lem = QCheckBox("LEM")
        self.use_lem.setToolTip("Location Expansion Module (tiles, Eqs 3-5)")
        self.use_maf = QCheckBox("MAF")
        self.use_maf.setToolTip("Multilevel Activation Fusion (Eqs 6-8)")
        self.use_fbe = QCheckBox("FBE")
        self.use_fbe.setToolTip("Foreground-background Enhanced pseudo-labels (Eqs 9-13)")
        for box, value in ((self.use_lem, defaults.model.use_lem), (self.use_maf, defaults.model.use_maf),
                           (self.use_fbe, defaults.model.use_fbe)):
            box.setChecked(value)

        settings = QGroupBox("Settings")
        grid = QGridLayout(settings)
        grid.setContentsMargins(6, 4, 6, 4)
        grid.setVerticalSpacing(3)
        rows = [("Mode", self.mode, None, None),
                ("Backbone", self.backbone, "Device", self.device),
                ("Iterations", self.iters, "Batch", self.batch),
                ("Crop", self.crop, "Alpha", self.alpha),
                ("Gamma", self.gamma, None, None)]
        for row, (label_a, widget_a, label_b, widget_b) in enumerate(rows):
            grid.addWidget(QLabel(label_a), row, 0)
            grid.addWidget(widget_a, row, 1)
            if widget_b is not None:
                grid.addWidget(QLabel(label_b), row, 2)
                grid.addWidget(widget_b, row, 3)
        modules = QHBoxLayout()
        for box in (self.use_lem, self.use_maf, self.use_fbe):
            modules.addWidget(box)
        grid.addLayout(modules, len(rows) - 1, 2, 1, 2)
        self._settings = settings

        self.train_button = QPushButton(icon("fa5s.play", "#2e7d32"), "Train")
        self.train_button.setToolTip("Start a new run in <project>/runs/<timestamp>")
        self.stop_button = QPushButton(icon("fa5s.stop", "#c62828"), "Stop")
        self.stop_button.setToolTip("Stop after the current iteration; the last checkpoint is kept")
        self.resume_button = QPushButton(icon("fa5s.redo-alt"), "Resume")
        self.resume_button.setToolTip("Continue the selected run up to Iterations, from its checkpoint (a finished run: "
                                      "from its model)")
        self.update_button = QPushButton(icon("fa5s.sync-alt", "#1565c0"), "Update")
        self.update_button.setToolTip("Continue the selected run for a short time, learning from your verified "
                                      "masks; the suggestions refresh when it ends")
        self.train_button.clicked.connect(self.startRequested)
        self.stop_button.clicked.connect(self.stopRequested)
        self.resume_button.clicked.connect(self.resumeRequested)
        self.update_button.clicked.connect(self.updateRequested)
        self.auto_update = QCheckBox("Update after each save")
        self.auto_update.setToolTip("Run an update whenever a verified mask is saved (one at a time)")
        self.runs = QComboBox()
        self.runs.setToolTip("Runs of this project; the selected one is used for CAMs and pseudo-labels")
        self.runs.setMinimumContentsLength(12)
        self.runs.currentIndexChanged.connect(self._on_run_changed)
        buttons = QHBoxLayout()
        for button in (self.train_button, self.stop_button, self.resume_button, self.update_button):
            buttons.addWidget(button)
        buttons.addStretch(1)
        run_row = QHBoxLayout()
        run_row.addWidget(QLabel("Run"))
        run_row.addWidget(self.runs, 1)
        run_row.addWidget(self.auto_update)
        self.run_size = QLabel("")
        self.run_size.setToolTip("The selected run folder on disk; features/ is capped by train.feature_cache_mb")
        self.run_size.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)

        self.progress = QProgressBar()
        self.progress.setFormat("")
        self.progress.setValue(0)
        self.stats = QLabel("Not training")
        self.stats.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)  # never widens the dock
        self.plot = LossPlot()

        right = QVBoxLayout()
        right.addLayout(buttons)
        right.addLayout(run_row)
        right.addWidget(self.run_size)
        right.addWidget(self.progress)
        right.addWidget(self.stats)
        right.addWidget(self.plot, 1)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addWidget(settings)
        layout.addLayout(right, 1)
        self._running = False
        self._update_budget_s: float | None = None
        self.set_running(False)

    @staticmethod
    def _spin(low: int, high: int, value: int, tip: str) -> QSpinBox:
        spin = QSpinBox()
        spin.setRange(low, high)
        spin.setValue(value)
        spin.setToolTip(tip)
        return spin

    @staticmethod
    def _double(low: float, high: float, value: float, tip: str) -> QDoubleSpinBox:
        spin = QDoubleSpinBox()
        spin.setRange(low, high)
        spin.setSingleStep(0.05)
        spin.setDecimals(2)
        spin.setValue(value)
        spin.setToolTip(tip)
        return spin

    # ------------------------------------------------------------ config
    def _on_mode_changed(self, _position: int) -> None:
        """Reset every field to the chosen mode's defaults (for the device the run will use)."""
        defaults = self._defaults = default_config(pick_device("auto").type, self.mode.currentData())
        self.iters.setValue(defaults.train.iters)
        self.batch.setValue(defaults.train.batch)
        self.crop.setValue(defaults.train.crop)
        self.alpha.setValue(defaults.model.alpha)
        self.gamma.setValue(defaults.model.gamma)
        for box, value in ((self.use_lem, defaults.model.use_lem), (self.use_maf, defaults.model.use_maf),
                           (self.use_fbe, defaults.model.use_fbe)):
            box.setChecked(value)

    def overrides(self) -> dict[str, object]:
        """The config keys set by the widgets (dotted ``section.key`` names)."""
        return {
            "model.backbone": self.backbone.currentText(),
            "train.device": self.device.currentText(),
            "train.iters": self.iters.value(),
            "train.batch": self.batch.value(),
            "train.crop": self.crop.value(),
            "model.alpha": self.alpha.value(),
            "model.gamma": self.gamma.value(),
            "model.use_lem": self.use_lem.isChecked(),
            "model.use_maf": self.use_maf.isChecked(),
            "model.use_fbe": self.use_fbe.isChecked(),
        }

    def set_extra_overrides(self, overrides: dict[str, object]) -> None:
        """Further config keys not on the panel (e.g. ``train.workers``), applied after the widgets."""
        self._extra = dict(overrides)

    def config(self) -> OSTEConfig:
        """A full `OSTEConfig`: the mode's defaults, then the widgets, then the extra overrides."""
        return apply_overrides(apply_overrides(OSTEConfig.from_dict(self._defaults.to_dict()), self.overrides()),
                               self._extra)

    # -------------------------------------------------------------- runs
    def set_runs(self, runs: list[Path], selected: Path | None) -> None:
        """List the run folders (newest first) and select ``selected`` (else the newest)."""
        self.runs.blockSignals(True)
        self.runs.clear()
        for run in runs:
            self.runs.addItem(run.name, str(run))
        position = self.runs.findData(str(selected)) if selected is not None else -1
        self.runs.setCurrentIndex(position if position >= 0 else (0 if runs else -1))
        self.runs.blockSignals(False)
        self._update_buttons()
        self.show_run_size()

    def selected_run(self) -> Path | None:
        data = self.runs.currentData()
        return Path(data) if data else None

    def show_run_size(self) -> None:
        """Show the selected run folder's size on disk (`RunFolder.disk_usage`, as ``oste info RUN``)."""
        run = self.selected_run()
        self.run_size.setText(f"On disk: {RunFolder(run).disk_usage()}" if run is not None and run.is_dir() else "")

    def _on_run_changed(self, _position: int) -> None:
        self._update_buttons()
        self.show_run_size()
        run = self.selected_run()
        self.runSelected.emit(str(run) if run else "")

    # ---------------------------------------------------------- progress
    def is_running(self) -> bool:
        return self._running

    def set_running(self, running: bool, update_budget_s: float | None = None) -> None:
        """Lock the settings while a training runs; an update (``update_budget_s``) shows time, not iterations."""
        self._running = running
        self._update_budget_s = update_budget_s if running else None
        self._settings.setEnabled(not running)
        self.runs.setEnabled(not running)
        self._update_buttons()

    def set_project_open(self, is_open: bool) -> None:
        self.setEnabled(is_open)

    def reset(self) -> None:
        """Forget the shown run's progress and loss curve (another folder was opened)."""
        self.plot.clear()
        self.progress.setRange(0, 100)
        self.progress.setValue(0)
        self.progress.setFormat("")
        self.stats.setText("Not training")

    def _update_buttons(self) -> None:
        run = self.selected_run()
        self.train_button.setEnabled(not self._running)
        self.stop_button.setEnabled(self._running)
        self.resume_button.setEnabled(not self._running and run is not None and (run / CHECKPOINT).exists())
        self.update_button.setEnabled(not self._running and run is not None and RunFolder(run).is_finished())

    def set_stopping(self) -> None:
        """Say that a stop was asked for and is waiting for the current iteration to end."""
        self.stop_button.setEnabled(False)
        self.stats.setText("Stopping… (after the current iteration)")

    def show_event(self, event: TrainEvent) -> None:
        """Update the bar, the statistics line and the plot from a trainer event (one point per progress event).
        An event with a ``phase`` shows it: the bar counts its units, the line gives the whole job's ETA."""
        if event.phase and event.kind not in ("start", "done", "cancelled"):
            self._show_phase(event)
            return
        if event.kind in PASS_NAMES:  # the fast mode's passes over the images: features first, then the fits
            self.progress.setFormat(f"{PASS_NAMES[event.kind]} %v / %m")
            self.progress.setRange(0, event.total)
            self.progress.setValue(event.iteration)
            self.stats.setText(event.message)
            return
        if self._update_budget_s:  # an update runs for a time budget: the bar shows the time used
            used = 0.0 if event.kind == "start" else max(self._update_budget_s - event.eta_s, 0.0)
            self.progress.setFormat("update %p%")
            self.progress.setRange(0, 1000)
            self.progress.setValue(1000 if event.kind == "done" else round(1000 * used / self._update_budget_s))
        elif event.total:
            self.progress.setFormat("%v / %m")
            self.progress.setRange(0, event.total)
            self.progress.setValue(event.iteration)
        if event.kind == "start":
            if event.iteration == 0:
                self.plot.clear()
            self.stats.setText(f"Starting at iteration {event.iteration} ...")
        elif event.kind == "progress":
            total_loss = event.losses.get("total", float("nan"))
            self.stats.setText(
                f"Iteration {event.iteration}/{event.total}  ·  {event.images_per_s:.1f} img/s  ·  "
                f"ETA {format_duration(event.eta_s)}  ·  loss {total_loss:.3f}")
            self.plot.add_point(event.iteration, event.losses)
        elif event.kind in ("done", "cancelled"):
            self.stats.setText(event.message)
            self.stats.setToolTip(event.message)
            self.show_run_size()

    def _show_phase(self, event: TrainEvent) -> None:
        self.progress.setFormat(f"{event.phase} %v / %m" + (" s" if event.phase == "update" else ""))
        self.progress.setRange(0, max(event.phase_total, 1))
        self.progress.setValue(event.phase_done)
        where = f"{event.phase} {event.phase_done}/{event.phase_total}  ·  ETA {format_duration(event.eta_s)}"
        if event.kind == "progress":
            total_loss = event.losses.get("total", float("nan"))
            self.stats.setText(f"{where}  ·  iteration {event.iteration}/{event.total}  ·  "
                               f"{event.images_per_s:.1f} img/s  ·  loss {total_loss:.3f}")
            self.plot.add_point(event.iteration, event.losses)
        elif event.kind != "log":
            self.stats.setText(f"{where}  ·  {event.message}" if event.message else where)
