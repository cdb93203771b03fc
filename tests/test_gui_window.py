"""The main window's behaviour around the edits: bad images, errors, closing, its size, help, tags, relaunch
and folder changes, and a fast-mode run (pytest-qt, offscreen, CPU, on a real demo project)."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from PySide6.QtCore import QSettings, Qt  # noqa: E402
from PySide6.QtWidgets import QLabel  # noqa: E402

from app.canvas import Tool  # noqa: E402
from app.main_window import MainWindow  # noqa: E402
from oste_core.data import load_mask  # noqa: E402
from oste_core.engine.trainer import TrainEvent  # noqa: E402

from gui_window_support import (  # noqa: E402, F401 (fixtures)
    TINY_TRAINING, Button, Questions, drag, one_torch_thread, project_dir, tags_csv, window,
)


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
