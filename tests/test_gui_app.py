"""The whole main window on a real demo project (pytest-qt, offscreen, CPU).

One test trains a tiny real model in the GUI's QThread (stop, resume, progress, responsiveness)
and then inspects the layers, the review order and a pseudo-label export with that run; the
other tests need no model.
"""
from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from PySide6.QtCore import Qt, QTimer  # noqa: E402

from app.canvas import Tool  # noqa: E402
from app.layers_dock import LAYERS  # noqa: E402
from app.main_window import MainWindow  # noqa: E402
from app.style import resize_to  # noqa: E402
from oste_core.data import load_mask  # noqa: E402
from oste_core.labels import UNSURE  # noqa: E402

from gui_window_support import (  # noqa: E402, F401 (fixtures)
    TINY_TRAINING, Button, Questions, drag, grab_array, one_torch_thread, project_dir, tags_csv, window,
)


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
