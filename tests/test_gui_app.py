"""The whole main window on a real demo project (pytest-qt, offscreen, CPU).

One test trains a tiny real model in the GUI's QThread (stop, resume, progress, responsiveness)
and then inspects the layers, the review order and a pseudo-label export with that run; the
other tests need no model.
"""
from __future__ import annotations

import csv
import os
import shutil
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from PySide6.QtCore import QSettings, Qt, QTimer  # noqa: E402
from PySide6.QtGui import QImage  # noqa: E402
from PySide6.QtWidgets import QMessageBox  # noqa: E402

from app.canvas import Tool  # noqa: E402
from app.layers_dock import LAYERS  # noqa: E402
from app.main_window import MainWindow  # noqa: E402
from oste_core.data import load_mask  # noqa: E402
from oste_core.editing import UNSURE  # noqa: E402

TINY_TRAINING = {"train.crop": 64, "train.batch": 2, "train.workers": 0, "train.log_every": 1, "train.checkpoint_every": 2, "model.cam_scales": (1.0,),
                 "model.crf_backend": "torch", "model.crf_iters": 3}
Button = QMessageBox.StandardButton


def grab_array(widget) -> np.ndarray:
    image = widget.grab().toImage().convertToFormat(QImage.Format.Format_RGB888)
    width, height = image.width(), image.height()
    data = np.frombuffer(image.constBits(), np.uint8, count=image.bytesPerLine() * height)
    return data.reshape(height, image.bytesPerLine())[:, : 3 * width].reshape(height, width, 3).copy()


def tags_csv(root: Path) -> dict[str, list[str]]:
    with open(root / "tags.csv", newline="", encoding="utf-8") as handle:
        return {row["image"]: [t for t in row["tags"].split(";") if t] for row in csv.DictReader(handle)}


class Questions:
    """Answers QMessageBox.question with a fixed button and records what was asked."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, answer: QMessageBox.StandardButton) -> None:
        self.answer, self.asked = answer, []
        monkeypatch.setattr(QMessageBox, "question", self._question)

    def _question(self, _parent, title, text, buttons=Button.Yes | Button.No, _default=Button.NoButton):
        self.asked.append(f"{title}: {text}")
        return self.answer if buttons & self.answer else Button.Yes


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """One intra-op thread: on a busy 2-core machine OpenMP spinning makes tiny models crawl."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture
def project_dir(demo_folder: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(demo_folder, tmp_path / "project"))


@pytest.fixture
def window(qtbot, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> MainWindow:
    settings = QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat)
    win = MainWindow(settings)
    qtbot.addWidget(win)
    win.resize(1100, 760)
    win.show()
    qtbot.waitExposed(win)
    yield win
    Questions(monkeypatch, Button.Discard)  # closing: stop a training, drop unsaved test edits
    win.close()


def drag(qtbot, canvas, start: tuple[float, float], end: tuple[float, float]) -> None:
    """A left-button drag between two image pixels."""
    a = canvas.to_widget(start[0] + 0.5, start[1] + 0.5).toPoint()
    b = canvas.to_widget(end[0] + 0.5, end[1] + 0.5).toPoint()
    qtbot.mousePress(canvas, Qt.MouseButton.LeftButton, pos=a)
    qtbot.mouseMove(canvas, b)
    qtbot.mouseRelease(canvas, Qt.MouseButton.LeftButton, pos=b)


def test_open_folder_lists_images_and_saves_tag_edits(window: MainWindow, project_dir: Path) -> None:
    assert window.open_folder(project_dir)
    assert window.image_list.list.count() == 12 and window.current_stem() == "demo_0000"
    assert window.device_label.text().startswith("Device: ") and window.crf_label.text().startswith("CRF: ")
    assert window.canvas.image_size() == (64, 64)
    classes = window.project.class_names
    missing = next(name for name in classes if name not in window.project.tags("demo_0000"))
    window.tags_panel.set_tag_checked(missing, True)
    assert missing in tags_csv(project_dir)["demo_0000.png"]
    toolbar_classes = [name for _index, name in window.edit_toolbar.class_entries()]
    assert toolbar_classes[0] == "background" and missing in toolbar_classes
    window.tags_panel.set_tag_checked(missing, False)
    assert missing not in tags_csv(project_dir)["demo_0000.png"]

    window.tags_panel.add_class("hexagon")
    assert (project_dir / "classes.txt").read_text().split() == [*classes, "hexagon"]
    window.tags_panel.set_tag_checked("hexagon", True)
    assert tags_csv(project_dir)["demo_0000.png"][-1] == "hexagon"
    window.image_list.tag_filter.setCurrentIndex(window.image_list.tag_filter.findData("hexagon"))
    assert window.image_list.visible_stems() == ["demo_0000"]


def test_untagged_images_are_listed_and_tagging_makes_them_samples(window: MainWindow, project_dir: Path) -> None:
    shutil.copy(project_dir / "demo_0001.png", project_dir / "extra.png")
    window.open_folder(project_dir)
    assert window.image_list.list.count() == 13
    assert not window.project.entry("extra").tagged
    window.image_list.select_stem("extra")
    window.tags_panel.set_tag_checked("circle", True)
    assert tags_csv(project_dir)["extra.png"] == ["circle"]
    assert window.project.is_tagged("extra")


def test_training_in_a_thread_then_layers_review_order_and_export(
    window: MainWindow, project_dir: Path, qtbot, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    window.open_folder(project_dir)
    panel = window.training_panel
    panel.iters.setValue(4)
    panel.device.setCurrentText("cpu")
    panel.set_extra_overrides(TINY_TRAINING)
    ticks: list[float] = []
    timer = QTimer()
    timer.timeout.connect(lambda: ticks.append(time.monotonic()))
    timer.start(20)
    events = []
    window.trainingEvent.connect(events.append)

    def stop_at_two(event) -> None:
        if event.kind == "progress" and event.iteration == 2:
            window.stop_training()

    window.trainingEvent.connect(stop_at_two)
    with qtbot.waitSignal(window.trainingFinished, timeout=300_000) as stopped:
        window.start_training()
        assert panel.stop_button.isEnabled() and not panel.train_button.isEnabled()
    window.trainingEvent.disconnect(stop_at_two)
    run = Path(stopped.args[0])
    assert run.parent == project_dir / "runs" and (run / "checkpoint.pt").exists() and not (run / "model.pt").exists()
    assert events[-1].kind == "cancelled" and panel.resume_button.isEnabled()

    with qtbot.waitSignal(window.trainingFinished, timeout=300_000) as resumed:
        panel.resume_button.click()
    timer.stop()
    assert Path(resumed.args[0]) == run and (run / "model.pt").exists()
    progress = [e.iteration for e in events if e.kind == "progress"]
    assert progress[:2] == [1, 2] and progress[-1] == 4 and events[-1].kind == "done"
    assert panel.progress.value() == 4 and panel.plot.series()["total"][-1][0] == 4
    gaps = np.diff(ticks)
    assert len(ticks) > 20 and gaps.max() < 5.0, "the event loop stalled while training"
    assert panel.selected_run() == run

    # the run's model is loaded in the background and the current image predicted
    qtbot.waitUntil(lambda: window.project.prediction(window.current_stem()) is not None, timeout=120_000)
    assert not window.layers_panel.is_busy()
    window.layers_panel.set_opacity(0.8)
    window.layers_panel.set_cam_class(window.project.tag_indices(window.current_stem())[0])
    canvas = window.canvas
    image_only = grab_array(canvas)
    shots = {}
    for number, (key, _title) in enumerate(LAYERS, start=1):
        qtbot.keyClick(canvas, Qt.Key(Qt.Key.Key_0 + number))  # number keys switch layers
        assert window.layers_panel.layer() == key
        shots[key] = grab_array(canvas)
    assert np.array_equal(shots["image"], image_only)
    for key in ("cam", "merged_cam", "enhanced_cam", "pseudo_label", "seg", "gt"):
        assert not np.array_equal(shots[key], image_only), key
    assert not np.array_equal(shots["cam"], shots["pseudo_label"])

    # accepting the pseudo-label copies it into the editable mask (undoable)
    window.accept_pseudo_label()
    prediction = window.project.prediction(window.current_stem())
    np.testing.assert_array_equal(canvas.document().mask, prediction.pseudo_label)

    # review order: every image scored in the background, worst first
    with qtbot.waitSignal(window.inference.scanFinished, timeout=300_000):
        window.image_list.review_button.click()
    scores = [window.image_list.entry(s).uncertainty for s in window.image_list.visible_stems()]
    assert None not in scores and scores == sorted(scores, reverse=True)
    assert window.image_list.sorted_by_uncertainty()

    # export the pseudo-labels as VOC PNGs through the dialog, then again (asks before replacing)
    questions = Questions(monkeypatch, Button.Yes)
    window.save_current()  # (no unsaved edits left, so the dialog opens without asking)
    dialog = window.show_export_dialog()
    out = tmp_path / "export"
    dialog.target.setText(str(out))
    dialog.source.setCurrentIndex(dialog.source.findData("pseudo_label"))
    dialog.prefer_verified.setChecked(False)
    assert dialog.formats() == ("voc",)
    dialog.export_button.click()
    qtbot.waitUntil(lambda: not dialog.is_running(), timeout=120_000)
    exported = sorted((out / "voc" / "SegmentationClass").glob("*.png"))
    assert len(exported) == 12 and "voc 12" in dialog.summary.toPlainText()
    sample = window.project.sample("demo_0003")
    expected = window.inference.predictor.predict_sample(window.project.folder, sample).pseudo_label
    np.testing.assert_array_equal(load_mask(out / "voc" / "SegmentationClass" / "demo_0003.png"), expected)
    dialog.export_button.click()
    qtbot.waitUntil(lambda: not dialog.is_running() and "voc 12" in dialog.summary.toPlainText(), timeout=120_000)
    assert len(questions.asked) == 1 and "already exist" in questions.asked[0]
    dialog.close()


def test_brush_undo_redo_save_and_edits_survive_switching_images(
    window: MainWindow, project_dir: Path, qtbot, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Driven with the labelme-style shortcuts: B, F, Ctrl+Z, Ctrl+Shift+Z, D, A, Ctrl+S."""
    window.open_folder(project_dir)
    canvas, toolbar = window.canvas, window.edit_toolbar
    canvas.setFocus()
    toolbar.set_tool(Tool.FILL)
    qtbot.keyClick(canvas, Qt.Key.Key_B)
    assert toolbar.tool() is Tool.BRUSH and canvas.tool() is Tool.BRUSH
    toolbar.set_radius(3)
    tag = window.project.tag_indices("demo_0000")[0]
    toolbar.set_class(tag)
    before = grab_array(canvas)
    drag(qtbot, canvas, (10, 32), (50, 32))
    doc = canvas.document()
    painted = doc.mask.copy()
    assert (painted[32, 10:51] == tag).all() and (painted[20] == 0).all()
    assert not np.array_equal(grab_array(canvas), before)
    assert toolbar.undo_action.isEnabled() and window.image_list.entry("demo_0000").unsaved

    qtbot.keyClick(canvas, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    assert (doc.mask == 0).all() and toolbar.redo_action.isEnabled()
    qtbot.keyClick(canvas, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.ShiftModifier)
    np.testing.assert_array_equal(doc.mask, painted)

    qtbot.keyClick(canvas, Qt.Key.Key_D)
    assert window.current_stem() == "demo_0001" and not canvas.document().mask.any()
    qtbot.keyClick(canvas, Qt.Key.Key_A)
    assert window.current_stem() == "demo_0000" and canvas.document() is doc
    np.testing.assert_array_equal(doc.mask, painted)

    toolbar.set_unsure(True)
    qtbot.keyClick(canvas, Qt.Key.Key_F)
    qtbot.mouseClick(canvas, Qt.MouseButton.LeftButton, pos=canvas.to_widget(2.5, 2.5).toPoint())
    assert doc.mask[2, 2] == UNSURE and doc.mask[32, 30] == tag
    qtbot.keyClick(canvas, Qt.Key.Key_S, Qt.KeyboardModifier.ControlModifier)
    verified = project_dir / "verified" / "demo_0000.png"
    np.testing.assert_array_equal(load_mask(verified), doc.mask)
    entry = window.image_list.entry("demo_0000")
    assert entry.status == "verified" and not entry.unsaved

    # the file changes on disk behind our back: saving asks before overwriting it
    questions = Questions(monkeypatch, Button.No)
    verified.write_bytes(verified.read_bytes())
    os.utime(verified, ns=(time.time_ns(), time.time_ns() + 5_000_000_000))
    toolbar.set_unsure(False)
    toolbar.set_tool(Tool.BRUSH)
    drag(qtbot, canvas, (5, 60), (20, 60))
    toolbar.save_action.trigger()
    assert len(questions.asked) == 1 and window.image_list.entry("demo_0000").unsaved
    questions.answer = Button.Yes
    toolbar.save_action.trigger()
    np.testing.assert_array_equal(load_mask(verified), doc.mask)

    # export of the verified masks needs no model; exporting into verified/ is refused
    qtbot.keyClick(canvas, Qt.Key.Key_E, Qt.KeyboardModifier.ControlModifier)
    dialog = window.export_dialog
    assert dialog is not None and dialog.isVisible()
    assert dialog.source.currentData() == "verified"
    dialog.target.setText(str(project_dir / "verified" / "out"))
    dialog.export_button.click()
    qtbot.waitUntil(lambda: not dialog.is_running(), timeout=60_000)
    assert "refusing to export" in dialog.summary.toPlainText()
    dialog.target.setText(str(project_dir / "exports" / "verified_only"))
    dialog.export_button.click()
    qtbot.waitUntil(lambda: not dialog.is_running() and "voc 1" in dialog.summary.toPlainText(), timeout=60_000)
    exported = project_dir / "exports" / "verified_only" / "voc" / "SegmentationClass" / "demo_0000.png"
    np.testing.assert_array_equal(load_mask(exported), doc.mask)
    dialog.close()


def test_bad_image_gets_an_error_badge_and_the_app_keeps_working(
    window: MainWindow, project_dir: Path, qtbot
) -> None:
    (project_dir / "demo_0005.png").write_bytes(b"this is not a png")
    window.open_folder(project_dir)
    qtbot.waitUntil(lambda: window.project.status("demo_0005") == "error", timeout=30_000)
    window.image_list.select_stem("demo_0005")
    assert window.canvas.image_size() is None and window.canvas.document() is None
    assert "demo_0005.png" in window.image_list.entry("demo_0005").message
    window.image_list.select_stem("demo_0006")
    assert window.canvas.image_size() == (64, 64)


def test_training_error_shows_a_dialog_and_the_app_stays_usable(
    window: MainWindow, project_dir: Path, qtbot
) -> None:
    window.open_folder(project_dir)
    window.training_panel.set_extra_overrides({**TINY_TRAINING, "model.pretrained": str(project_dir / "missing.pth")})
    with qtbot.waitSignal(window.trainingFinished, timeout=120_000) as finished:
        window.start_training()
    assert finished.args == [""]
    box = window.error_box
    assert box is not None and box.isVisible() and "missing.pth" in box.text()
    assert window.training_panel.train_button.isEnabled() and not window.is_training()
    window.next_action.trigger()
    assert window.current_stem() == "demo_0001"


def test_closing_during_training_asks_then_stops_cleanly(
    window: MainWindow, project_dir: Path, qtbot, monkeypatch: pytest.MonkeyPatch
) -> None:
    window.open_folder(project_dir)
    window.training_panel.iters.setValue(1000)
    window.training_panel.device.setCurrentText("cpu")
    window.training_panel.set_extra_overrides(TINY_TRAINING)
    with qtbot.waitSignal(window.trainingEvent, timeout=120_000, check_params_cb=lambda e: e.kind == "progress"):
        window.start_training()
    (run,) = (project_dir / "runs").iterdir()
    questions = Questions(monkeypatch, Button.No)
    assert not window.close() and window.is_training()  # "No": keep training
    questions.answer = Button.Yes
    assert window.close()
    assert len(questions.asked) == 2 and "Training is running" in questions.asked[0]
    assert (run / "checkpoint.pt").exists() and not (run / "model.pt").exists()


def test_close_asks_about_unsaved_edits_and_settings_are_remembered(
    window: MainWindow, project_dir: Path, qtbot, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    window.open_folder(project_dir)
    window.edit_toolbar.set_tool(Tool.BRUSH)
    drag(qtbot, window.canvas, (5, 5), (20, 20))
    questions = Questions(monkeypatch, Button.Cancel)
    assert not window.close() and window.isVisible()
    assert "unsaved edits" in questions.asked[0]
    questions.answer = Button.SaveAll
    assert window.close()
    assert (project_dir / "verified" / "demo_0000.png").exists()

    settings = QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat)
    assert Path(settings.value("lastFolder")) == project_dir.resolve()
    assert settings.value("window/state") is not None
    again = MainWindow(settings)
    qtbot.addWidget(again)
    assert again.settings.value("lastFolder") == str(project_dir.resolve())
