"""The training panel, the training worker's progress and the launcher's display checks (pytest-qt, offscreen)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import pytest  # noqa: E402

from app.main import EXIT_NO_PLATFORM, missing_xcb_packages, uses_xcb  # noqa: E402
from app.training_panel import TrainingPanel  # noqa: E402
from app.workers import TrainWorker  # noqa: E402
from oste_core.config import OSTEConfig  # noqa: E402
from oste_core.engine.trainer import TrainEvent  # noqa: E402


def test_training_panel_starts_from_the_device_preset(qtbot):
    from oste_core.config import default_config
    from oste_core.utils.device import pick_device

    preset = default_config(pick_device("auto").type)
    panel = TrainingPanel(["auto", "cpu"])
    qtbot.addWidget(panel)
    assert (panel.iters.value(), panel.batch.value(), panel.crop.value()) == (
        preset.train.iters, preset.train.batch, preset.train.crop)
    panel.iters.setValue(7)
    cfg = panel.config()
    assert cfg.train.iters == 7 and cfg.model.cam_scales == preset.model.cam_scales
    assert cfg.train.freeze_backbone  # the fast mode on every device


def test_training_panel_mode_resets_the_fields_to_that_mode(qtbot):
    panel = TrainingPanel(["auto", "cpu"])
    qtbot.addWidget(panel)
    panel.mode.setCurrentIndex(panel.mode.findData("paper"))
    assert panel.iters.value() == 10000 and panel.crop.value() == 321
    assert not panel.config().train.freeze_backbone
    panel.mode.setCurrentIndex(panel.mode.findData("fast"))
    assert panel.iters.value() == 360 and panel.config().train.freeze_backbone


def test_xcb_libraries_are_checked_before_qt_starts() -> None:
    assert missing_xcb_packages({"libc.so.6": "libc6", "libdoes-not-exist.so.9": "libdoes-not-exist9"}) == [
        "libdoes-not-exist9"]
    assert uses_xcb({"DISPLAY": ":0"}, "linux") and uses_xcb({"QT_QPA_PLATFORM": "xcb"}, "linux")
    assert not uses_xcb({"DISPLAY": ":0", "QT_QPA_PLATFORM": "offscreen"}, "linux")
    assert not uses_xcb({"DISPLAY": ":0"}, "darwin")


@pytest.mark.parametrize("platform", ["xcb", "no-such-plugin"])
def test_a_platform_plugin_failure_is_explained_not_aborted(platform: str, tmp_path: Path) -> None:
    """A real `oste-gui` process that cannot start its display (no X server on :97, or no such plugin)."""
    env = {**os.environ, "QT_QPA_PLATFORM": platform, "DISPLAY": ":97", "XDG_DATA_HOME": str(tmp_path),
           "HOME": str(tmp_path)}
    env.pop("WAYLAND_DISPLAY", None)
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "-m", "app.main", str(tmp_path / "none")], cwd=root, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == EXIT_NO_PLATFORM, done.stderr
    assert "sudo apt install" in done.stderr and "libxcb-" in done.stderr
    assert f"'{platform}' display plugin" in done.stderr


def test_training_panel_plots_every_progress_event_and_offers_update(qtbot, tmp_path) -> None:
    panel = TrainingPanel(["auto", "cpu"])
    qtbot.addWidget(panel)
    panel.show_event(TrainEvent("start", 0, 5))
    for iteration in range(1, 6):
        panel.show_event(TrainEvent("progress", iteration, 5, {"total": 1.0 / iteration}, 0.01, 2.0, 5.0))
        assert panel.progress.value() == iteration and len(panel.plot.series()["total"]) == iteration
    finished, stopped = tmp_path / "runs" / "b", tmp_path / "runs" / "a"
    finished.mkdir(parents=True)
    stopped.mkdir()
    (finished / "model.pt").write_bytes(b"")
    (stopped / "checkpoint.pt").write_bytes(b"")
    panel.set_runs([finished, stopped], finished)
    assert panel.update_button.isEnabled() and not panel.resume_button.isEnabled()
    panel.set_runs([finished, stopped], stopped)
    assert not panel.update_button.isEnabled() and panel.resume_button.isEnabled()
    panel.set_runs([finished, stopped], finished)
    with qtbot.waitSignal(panel.updateRequested):
        panel.update_button.click()
    panel.set_running(True)
    assert not panel.update_button.isEnabled()
    panel.set_stopping()
    assert "Stopping" in panel.stats.text() and not panel.stop_button.isEnabled()
    panel.reset()
    assert panel.plot.series() == {} and panel.progress.value() == 0


def test_training_panel_shows_an_update_as_time_used(qtbot) -> None:
    panel = TrainingPanel(["auto", "cpu"])
    qtbot.addWidget(panel)
    panel.set_running(True, update_budget_s=40.0)
    panel.show_event(TrainEvent("start", 300, 300))
    assert panel.progress.value() == 0
    panel.show_event(TrainEvent("progress", 305, 305, {"total": 0.5}, 0.01, 2.0, 30.0))
    assert panel.progress.value() == 250 and panel.plot.series()["total"] == [(305, 0.5)]
    panel.show_event(TrainEvent("done", 309, 309, message="finished"))
    assert panel.progress.value() == panel.progress.maximum()
    panel.set_running(False)
    panel.show_event(TrainEvent("progress", 3, 6, {"total": 1.0}, 0.01, 2.0, 30.0))
    assert (panel.progress.value(), panel.progress.maximum()) == (3, 6)


def test_training_panel_shows_the_jobs_phase_and_eta_and_the_run_size(qtbot, tmp_path) -> None:
    panel = TrainingPanel(["auto", "cpu"])
    qtbot.addWidget(panel)
    panel.show_event(TrainEvent("features", 40, 180, eta_s=600.0, message="backbone features 40/180 (30 s)",
                                phase="features", phase_done=40, phase_total=180))
    assert panel.progress.text().startswith("features") and (panel.progress.value(), panel.progress.maximum()) == (40, 180)
    assert "features 40/180" in panel.stats.text() and "ETA 10:00" in panel.stats.text()
    panel.show_event(TrainEvent("progress", 310, 360, {"total": 0.5}, 0.01, 3.0, 300.0, phase="training",
                                phase_done=10, phase_total=60))
    assert (panel.progress.value(), panel.progress.maximum()) == (10, 60)
    assert "training 10/60" in panel.stats.text() and "ETA 5:00" in panel.stats.text()
    assert panel.plot.series()["total"] == [(310, 0.5)]
    run = tmp_path / "runs" / "a"
    (run / "features").mkdir(parents=True)
    (run / "features" / "x.npz").write_bytes(b"0" * 2**20)
    (run / "data.json").write_text('{"images": 4}')
    panel.set_runs([run], run)
    assert "1 MB" in panel.run_size.text() and "per photo, 4 photos" in panel.run_size.text()


def test_train_worker_thins_fast_progress_but_always_passes_the_first_and_last_step(tmp_path: Path) -> None:
    worker = TrainWorker(OSTEConfig(), tmp_path, tmp_path / "run")
    passed: list[TrainEvent] = []
    worker.event.connect(passed.append)
    for iteration in range(1, 201):  # far faster than the GUI's interval
        worker._forward(TrainEvent("progress", iteration=iteration, total=200))
    worker._forward(TrainEvent("done", iteration=200, total=200))
    iterations = [e.iteration for e in passed if e.kind == "progress"]
    assert iterations[0] == 1 and iterations[-1] == 200 and len(iterations) < 20
    assert passed[-1].kind == "done"
