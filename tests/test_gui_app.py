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
from PySide6.QtWidgets import QLabel, QMessageBox  # noqa: E402

from app.canvas import Tool  # noqa: E402
from app.layers_dock import LAYERS  # noqa: E402
from app.main_window import MainWindow  # noqa: E402
from app.style import resize_to  # noqa: E402
from oste_core.data import load_mask  # noqa: E402
from oste_core.labels import UNSURE  # noqa: E402
from oste_core.engine.trainer import TrainEvent  # noqa: E402

TINY_TRAINING = {"train.crop": 64, "train.batch": 2, "train.workers": 0, "train.log_every": 1, "train.checkpoint_every": 2, "model.cam_scales": (1.0,),
                 "model.crf_backend": "torch", "model.crf_iters": 3, "loss.seg_warmup_iters": 0,
                 "model.suggestion_seg_weight": 0.5, "model.suggestion_gamma": 4.0}
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
    qtbot.waitUntil(lambda: not win.training.is_running(), timeout=300_000)  # a running training closes the window later


def drag(qtbot, canvas, start: tuple[float, float], end: tuple[float, float]) -> None:
    """A left-button drag between two image pixels."""
    a = canvas.to_widget(start[0] + 0.5, start[1] + 0.5).toPoint()
    b = canvas.to_widget(end[0] + 0.5, end[1] + 0.5).toPoint()
    qtbot.mousePress(canvas, Qt.MouseButton.LeftButton, pos=a)
    qtbot.mouseMove(canvas, b)
    qtbot.mouseRelease(canvas, Qt.MouseButton.LeftButton, pos=b)


def test_open_folder_lists_images_and_saves_tag_edits(window: MainWindow, project_dir: Path) -> None:
    assert window.folders.open_folder(project_dir)
    assert window.image_list.list.count() == 12 and window.view.stem == "demo_0000"
    bar = window.status_bar
    assert bar.device_label.text().startswith("Device: ") and bar.crf_label.text().startswith("CRF: ")
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
    window.folders.open_folder(project_dir)
    assert window.image_list.list.count() == 13
    assert not window.project.entry("extra").tagged
    window.image_list.select_stem("extra")
    window.tags_panel.set_tag_checked("circle", True)
    assert tags_csv(project_dir)["extra.png"] == ["circle"]
    assert window.project.is_tagged("extra")


def test_training_in_a_thread_then_layers_review_order_and_export(
    window: MainWindow, project_dir: Path, qtbot, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    window.folders.open_folder(project_dir)
    panel = window.training_panel
    panel.iters.setValue(4)
    panel.device.setCurrentText("cpu")
    panel.set_extra_overrides(TINY_TRAINING)
    ticks: list[float] = []
    timer = QTimer()
    timer.timeout.connect(lambda: ticks.append(time.monotonic()))
    timer.start(20)
    events = []
    window.training.event.connect(events.append)

    def stop_at_first(event) -> None:  # the first progress event always reaches the GUI (later ones are throttled)
        if event.kind == "progress" and event.iteration == 1:
            window.training.stop()

    window.training.event.connect(stop_at_first)
    with qtbot.waitSignal(window.training.finished, timeout=300_000) as stopped:
        window.training.start()
        assert panel.stop_button.isEnabled() and not panel.train_button.isEnabled()
    window.training.event.disconnect(stop_at_first)
    run = Path(stopped.args[0])
    assert run.parent == project_dir / "runs" and (run / "checkpoint.pt").exists() and not (run / "model.pt").exists()
    assert events[-1].kind == "cancelled" and panel.resume_button.isEnabled()

    with qtbot.waitSignal(window.training.finished, timeout=300_000) as resumed:
        panel.resume_button.click()
    timer.stop()
    assert Path(resumed.args[0]) == run and (run / "model.pt").exists()
    progress = [e.iteration for e in events if e.kind == "progress"]
    resumed_from = progress.index(1) + 1  # the resumed run continues after the checkpoint, never restarts at 1
    assert progress[0] == 1 and 1 not in progress[resumed_from:]
    assert progress == sorted(progress) and progress[-1] == 4 and events[-1].kind == "done"
    assert panel.progress.value() == 4 and panel.plot.series()["total"][-1][0] == 4
    gaps = np.diff(ticks)
    assert len(ticks) > 20 and gaps.max() < 5.0, "the event loop stalled while training"
    assert panel.selected_run() == run

    # the run's model is loaded in the background and the current image predicted
    qtbot.waitUntil(lambda: window.project.prediction(window.view.stem) is not None, timeout=120_000)
    assert not window.layers_panel.is_busy()
    window.layers_panel.set_opacity(0.8)
    window.layers_panel.set_cam_class(window.project.tag_indices(window.view.stem)[0])
    canvas = window.canvas
    window.layers_panel.set_layer("image")
    image_only = grab_array(canvas)
    shots = {}
    for number, (key, _title) in enumerate(LAYERS[:8], start=1):  # 9, the corrections, needs strokes
        qtbot.keyClick(canvas, Qt.Key(Qt.Key.Key_0 + number))  # number keys switch layers
        assert window.layers_panel.layer() == key
        shots[key] = grab_array(canvas)
    assert np.array_equal(shots["image"], image_only)
    for key in ("cam", "merged_cam", "enhanced_cam", "pseudo_label", "seg", "gt"):
        assert not np.array_equal(shots[key], image_only), key
    assert not np.array_equal(shots["cam"], shots["pseudo_label"])

    # the suggestion is the default layer; "S" copies it into the editable mask (undoable), after which the
    # user's mask replaces it as the overlay
    prediction = window.project.prediction(window.view.stem)
    assert set(np.unique(prediction.suggestion)) <= {0, *window.project.tag_indices(window.view.stem)}
    doc = canvas.document()
    doc.set_all(np.full(doc.shape, UNSURE, np.uint8))  # a mask that differs from any suggestion
    canvas.setFocus()
    qtbot.keyClick(canvas, Qt.Key.Key_S)
    np.testing.assert_array_equal(doc.mask, resize_to(prediction.suggestion, doc.shape, nearest=True))  # at 1.5x
    assert doc.can_undo
    window.layers_panel.set_layer("suggestion")
    assert "Your mask is shown" in window.layers_panel.note()
    qtbot.keyClick(canvas, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    assert (doc.mask == UNSURE).all()

    # accepting the pseudo-label copies it into the editable mask (undoable)
    window.editor.accept_pseudo_label()
    np.testing.assert_array_equal(canvas.document().mask, resize_to(prediction.pseudo_label, doc.shape, nearest=True))

    # review order: every image scored in the background, worst first
    with qtbot.waitSignal(window.inference.scanFinished, timeout=300_000):
        window.image_list.review_button.click()
    scores = [window.image_list.entry(s).uncertainty for s in window.image_list.visible_stems()]
    assert None not in scores and scores == sorted(scores, reverse=True)
    assert window.image_list.sorted_by_uncertainty()
    window.image_list.review_button.click()  # a second scan, cancelled at once
    assert window.image_list.cancel_review_button.isVisible() and window.inference.scanning
    window.image_list.cancel_review_button.click()
    assert not window.inference.scanning and window.image_list.review_button.isEnabled()
    assert not window.image_list.sort_progress.isVisible()

    # export the pseudo-labels as VOC PNGs through the dialog, then again (asks before replacing)
    questions = Questions(monkeypatch, Button.Yes)
    window.editor.save_current()  # (no unsaved edits left, so the dialog opens without asking)
    qtbot.waitUntil(lambda: not window.inference.refreshing, timeout=300_000)  # the save's refresh ends first
    dialog = window.folders.show_export_dialog()
    out = tmp_path / "export"
    dialog.target.setText(str(out))
    dialog.source.setCurrentIndex(dialog.source.findData("pseudo"))
    dialog.prefer_verified.setChecked(False)
    assert dialog.formats() == ("voc",)
    dialog.export_button.click()
    qtbot.waitUntil(lambda: not dialog.is_running(), timeout=120_000)
    exported = sorted((out / "voc" / "SegmentationClass").glob("*.png"))
    assert len(exported) == 12 and "voc 12" in dialog.summary.toPlainText()
    sample = window.project.sample("demo_0003")
    expected = window.inference.predictor.predict_sample(window.project.folder, sample).pseudo_label
    written = load_mask(out / "voc" / "SegmentationClass" / "demo_0003.png")  # at the image's size
    np.testing.assert_array_equal(written, resize_to(expected, written.shape, nearest=True))
    dialog.export_button.click()
    qtbot.waitUntil(lambda: not dialog.is_running() and "voc 12" in dialog.summary.toPlainText(), timeout=120_000)
    assert len(questions.asked) == 1 and "already exist" in questions.asked[0]
    dialog.close()

    # "Update": the run continues briefly on the verified masks, then its model is reloaded
    window.training.update_budget_s = 1.0
    model_time = (run / "model.pt").stat().st_mtime_ns
    with qtbot.waitSignal(window.training.finished, timeout=300_000) as updated:
        panel.update_button.click()
        assert window.training.is_running() and panel.stop_button.isEnabled()
    assert Path(updated.args[0]) == run and (run / "model.pt").stat().st_mtime_ns > model_time
    assert window.project.prediction(window.view.stem) is None  # the old predictions are dropped
    qtbot.waitUntil(lambda: window.project.prediction(window.view.stem) is not None, timeout=120_000)

    # "Update after each save": never two at once, one more is queued
    panel.auto_update.setChecked(True)
    finished: list[str] = []
    window.training.finished.connect(finished.append)
    for row in (10, 20):
        drag(qtbot, canvas, (5, row), (30, row))
        window.editor.save_current()
        assert window.training.is_running()
    qtbot.waitUntil(lambda: len(finished) == 2 and not window.training.is_running(), timeout=300_000)
    assert finished == [str(run), str(run)]
    assert str(window.settings.value("training/autoUpdate")).lower() == "true"


def test_brush_undo_redo_save_and_edits_survive_switching_images(
    window: MainWindow, project_dir: Path, qtbot, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Driven with the labelme-style shortcuts: B, F, Ctrl+Z, Ctrl+Shift+Z, D, A, Ctrl+S. The images are not
    verified and there is no model: strokes are corrections, Ctrl+S saves them over background."""
    window.folders.open_folder(project_dir)
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
    assert doc.sparse and (painted[32, 10:51] == tag).all() and (painted[20] == UNSURE).all()
    assert not np.array_equal(grab_array(canvas), before)
    corrections = project_dir / "corrections" / "demo_0000.png"
    np.testing.assert_array_equal(load_mask(corrections), painted)  # saved at once
    assert toolbar.undo_action.isEnabled() and not window.image_list.entry("demo_0000").unsaved

    qtbot.keyClick(canvas, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    assert (doc.mask == UNSURE).all() and toolbar.redo_action.isEnabled() and not corrections.exists()
    qtbot.keyClick(canvas, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.ShiftModifier)
    np.testing.assert_array_equal(doc.mask, painted)
    np.testing.assert_array_equal(load_mask(corrections), painted)

    qtbot.keyClick(canvas, Qt.Key.Key_D)
    assert window.view.stem == "demo_0001" and (canvas.document().mask == UNSURE).all()
    qtbot.keyClick(canvas, Qt.Key.Key_A)
    assert window.view.stem == "demo_0000"
    doc = canvas.document()
    np.testing.assert_array_equal(doc.mask, painted)  # read back from corrections/

    qtbot.keyClick(canvas, Qt.Key.Key_S, Qt.KeyboardModifier.ControlModifier)  # no suggestion: over background
    verified = project_dir / "verified" / "demo_0000.png"
    assert not doc.sparse and doc.mask[20, 5] == 0 and doc.mask[32, 30] == tag
    np.testing.assert_array_equal(load_mask(verified), doc.mask)
    toolbar.set_unsure(True)
    qtbot.keyClick(canvas, Qt.Key.Key_F)
    qtbot.mouseClick(canvas, Qt.MouseButton.LeftButton, pos=canvas.to_widget(2.5, 2.5).toPoint())
    assert doc.mask[2, 2] == UNSURE and doc.mask[32, 30] == tag
    qtbot.keyClick(canvas, Qt.Key.Key_S, Qt.KeyboardModifier.ControlModifier)
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
    dialog = window.folders.export_dialog
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
    window.folders.open_folder(project_dir)
    qtbot.waitUntil(lambda: window.project.status("demo_0005") == "error", timeout=30_000)
    window.image_list.select_stem("demo_0005")
    assert window.canvas.image_size() is None and window.canvas.document() is None
    assert "demo_0005.png" in window.image_list.entry("demo_0005").message
    window.image_list.select_stem("demo_0006")
    assert window.canvas.image_size() == (64, 64)


def test_training_error_shows_a_dialog_and_the_app_stays_usable(
    window: MainWindow, project_dir: Path, qtbot
) -> None:
    window.folders.open_folder(project_dir)
    window.training_panel.set_extra_overrides({**TINY_TRAINING, "model.pretrained": str(project_dir / "missing.pth")})
    with qtbot.waitSignal(window.training.finished, timeout=120_000) as finished:
        window.training.start()
    assert finished.args == [""]
    box = window.messages.error_box
    assert box is not None and box.isVisible() and "missing.pth" in box.text()
    assert window.training_panel.train_button.isEnabled() and not window.training.is_running()
    window.menus.next_action.trigger()
    assert window.view.stem == "demo_0001"


def test_closing_during_training_asks_then_stops_cleanly(
    window: MainWindow, project_dir: Path, qtbot, monkeypatch: pytest.MonkeyPatch
) -> None:
    window.folders.open_folder(project_dir)
    window.training_panel.iters.setValue(1000)
    window.training_panel.device.setCurrentText("cpu")
    window.training_panel.set_extra_overrides(TINY_TRAINING)
    with qtbot.waitSignal(window.training.event, timeout=120_000, check_params_cb=lambda e: e.kind == "progress"):
        window.training.start()
    (run,) = (project_dir / "runs").iterdir()
    questions = Questions(monkeypatch, Button.No)
    assert not window.close() and window.training.is_running()  # "No": keep training
    questions.answer = Button.Yes
    assert not window.close() and window.isVisible()  # "Yes": close() returns at once, the training still ends
    assert window.training.is_running(), "close() waited for the training instead of returning to the event loop"
    assert "Stopping" in window.training_panel.stats.text() and "stopping" in window.statusBar().currentMessage()
    assert not window.training_panel.stop_button.isEnabled()
    qtbot.waitUntil(lambda: not window.isVisible(), timeout=300_000)  # closed once the iteration ended
    assert not window.training.is_running()
    assert len(questions.asked) == 2 and "Training is running" in questions.asked[0]
    assert (run / "checkpoint.pt").exists() and not (run / "model.pt").exists()


def test_close_asks_about_unsaved_edits_and_settings_are_remembered(
    window: MainWindow, project_dir: Path, qtbot, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    window.folders.open_folder(project_dir)
    window.edit_toolbar.set_tool(Tool.BRUSH)
    drag(qtbot, window.canvas, (5, 5), (20, 20))  # a correction, saved at once
    assert window.editor.save_current()  # now a verified mask: its edits wait for Ctrl+S
    drag(qtbot, window.canvas, (5, 40), (20, 40))
    doc = window.canvas.document()
    questions = Questions(monkeypatch, Button.Cancel)
    assert not window.close() and window.isVisible()
    assert "unsaved edits" in questions.asked[0]
    questions.answer = Button.SaveAll
    assert window.close()
    np.testing.assert_array_equal(load_mask(project_dir / "verified" / "demo_0000.png"), doc.mask)

    settings = QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat)
    assert Path(settings.value("lastFolder")) == project_dir.resolve()
    assert settings.value("window/state") is not None
    again = MainWindow(settings)
    qtbot.addWidget(again)
    assert again.settings.value("lastFolder") == str(project_dir.resolve())


def test_window_fits_a_1366x768_screen_and_opens_within_the_screen(
    window: MainWindow, project_dir: Path, qtbot, tmp_path: Path
) -> None:
    window.folders.open_folder(project_dir)
    hint = window.minimumSizeHint()
    assert hint.width() <= 1000 and hint.height() <= 620, hint
    window.resize(1366, 768)
    qtbot.waitUntil(lambda: (window.width(), window.height()) == (1366, 768))
    inside = window.rect()
    bar = window.statusBar()
    assert bar.isVisible() and inside.contains(bar.geometry())
    for dock in (window.list_dock, window.tags_dock, window.layers_dock, window.training_dock):
        assert dock.isVisible() and inside.contains(dock.geometry()), dock.objectName()
    assert window.canvas.width() >= 400 and window.canvas.height() >= 250

    fresh = MainWindow(QSettings(str(tmp_path / "fresh.ini"), QSettings.Format.IniFormat))
    qtbot.addWidget(fresh)
    available = fresh.screen().availableGeometry()
    assert fresh.width() <= available.width() and fresh.height() <= available.height()


def test_help_menu_lists_every_shortcut_once_and_explains_the_layers(window: MainWindow, project_dir: Path) -> None:
    window.folders.open_folder(project_dir)
    window.menus.shortcuts_action.trigger()
    dialog = window.menus.help_dialog
    assert dialog is not None and dialog.isVisible() and dialog.tabs.currentIndex() == 0
    table = dialog.shortcuts
    rows = {table.item(r, 1).text(): table.item(r, 0).text() for r in range(table.rowCount())}
    assert rows["Accept suggestion"] == "S" and rows["Next image"] == "D" and rows["Keyboard shortcuts"] == "F1"
    assert any(text.startswith("Similar-colour fill") and keys == "W" for text, keys in rows.items())
    keys = [k.toString() for a in window.menus.shortcut_actions() for k in a.shortcuts() if not k.isEmpty()]
    assert len(keys) == len(set(keys)), "two actions share a shortcut"
    window.menus.legend_action.trigger()
    assert dialog.tabs.currentIndex() == 1
    texts = [label.text() for label in dialog.legend.findChildren(QLabel)]
    assert any(t.startswith("Hatching") and "unsure" in t for t in texts)
    assert any("background" in t for t in texts)
    assert any(t.startswith("Corrections") and "layer 9" in t for t in texts)
    assert rows["Layer 9: Corrections"] == "9" and "suggestion with your corrections" in next(
        text for text in rows if text.startswith("Save verified mask"))
    assert any(t.startswith(f"{name}: class {i}") for i, name in enumerate(window.project.class_names, 1) for t in texts)


def test_tags_ticked_first_undoable_and_images_listed_by_file_name(
    window: MainWindow, project_dir: Path, qtbot
) -> None:
    nested = project_dir / "images" / "a_very_long_folder_name_that_would_fill_the_row"
    nested.mkdir(parents=True)
    shutil.copy(project_dir / "demo_0001.png", nested / "street_scene_0042.png")
    window.folders.open_folder(project_dir)
    entry = window.image_list.entry("street_scene_0042")
    item = window.image_list._items["street_scene_0042"]
    assert item.text().startswith("street_scene_0042.png") and "a_very_long_folder" not in item.text()
    assert item.toolTip().startswith("images/a_very_long_folder_name_that_would_fill_the_row/street_scene_0042.png")
    assert entry.display_name == "street_scene_0042.png"
    assert window.image_list.list.textElideMode() == Qt.TextElideMode.ElideMiddle

    panel = window.tags_panel
    classes = window.project.class_names
    original = window.project.tags("demo_0000")
    last = classes[-1]
    assert last not in original
    panel.set_tag_checked(last, True)
    qtbot.waitUntil(lambda: panel.shown_order()[: len(original) + 1] == [c for c in classes if c in {*original, last}])
    assert last in tags_csv(project_dir)["demo_0000.png"]
    panel._list.setFocus()
    qtbot.keyClick(panel._list, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)  # undo in the Tags panel
    assert tags_csv(project_dir)["demo_0000.png"] == original and panel.tags() == original
    assert panel.shown_order()[: len(original)] == original
    qtbot.keyClick(panel._list, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.ShiftModifier)
    assert last in tags_csv(project_dir)["demo_0000.png"]
    assert not window.canvas.document().can_undo  # the mask was not touched


def test_relaunch_prefers_a_finished_run_and_keeps_the_iterations(
    window: MainWindow, project_dir: Path, qtbot, tmp_path: Path
) -> None:
    finished, aborted = project_dir / "runs" / "20260101-100000", project_dir / "runs" / "20260102-100000"
    finished.mkdir(parents=True)
    aborted.mkdir()
    (finished / "model.pt").write_bytes(b"not a real model")  # loading fails and is reported; the choice is tested
    (aborted / "checkpoint.pt").write_bytes(b"an aborted 1-iteration run")
    window.folders.open_folder(project_dir)
    window.settings.setValue(window.runs._run_key(), aborted.name)  # the last session ended on the aborted run
    window.training_panel.iters.setValue(1234)
    window.training_panel.plot.add_point(1, {"total": 1.0})
    window.close()

    again = MainWindow(QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat))
    qtbot.addWidget(again)
    assert again.training_panel.iters.value() == 1234
    again.folders.open_folder(project_dir)
    assert again.training_panel.selected_run() == finished
    assert again.training_panel.plot.series() == {}
    again.close()


def test_opening_another_folder_resets_the_training_panel(
    window: MainWindow, project_dir: Path, demo_folder: Path, tmp_path: Path
) -> None:
    window.folders.open_folder(project_dir)
    panel = window.training_panel
    panel.show_event(TrainEvent("start", 0, 10))
    panel.show_event(TrainEvent("progress", 5, 10, {"total": 1.5}, 0.01, 4.0, 75.0))
    assert panel.plot.series() and panel.progress.value() == 5
    other = Path(shutil.copytree(demo_folder, tmp_path / "other"))
    window.folders.open_folder(other)
    assert panel.plot.series() == {} and panel.progress.value() == 0 and panel.stats.text() == "Not training"
    assert panel.selected_run() is None


def test_fast_mode_run_predicts_from_its_feature_cache_and_updates(
    window: MainWindow, project_dir: Path, qtbot
) -> None:
    window.folders.open_folder(project_dir)
    panel = window.training_panel
    panel.iters.setValue(2)
    panel.device.setCurrentText("cpu")
    panel.set_extra_overrides({**TINY_TRAINING, "train.freeze_backbone": True})
    with qtbot.waitSignal(window.training.finished, timeout=300_000) as trained:
        window.training.start()
    run = Path(trained.args[0])
    assert (run / "model.pt").exists()
    qtbot.waitUntil(lambda: window.project.prediction(window.view.stem) is not None, timeout=120_000)
    prediction = window.project.prediction(window.view.stem)
    height, width = window.canvas.image_size()  # the demo images are under the working size: only enlarged 1.5x
    assert prediction.suggestion.shape == (round(1.5 * height), round(1.5 * width))
    window.training.update_budget_s = 0.5
    with qtbot.waitSignal(window.training.finished, timeout=300_000) as updated:
        window.menus.update_action.trigger()
    assert updated.args == [str(run)]
    qtbot.waitUntil(lambda: window.project.prediction(window.view.stem) is not None, timeout=120_000)
