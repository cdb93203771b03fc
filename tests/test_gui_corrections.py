"""Corrections that count, in the whole window (pytest-qt, offscreen, CPU): strokes on an image that is
not verified are saved at once to ``corrections/``, re-predicted and refreshed, undone, kept across a
restart, left out of the verified export, and Ctrl+S saves the suggestion with them as the verified mask.

One tiny fast-mode run (frozen backbone, a pixel classifier to refit) is trained once for the module.
"""
from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from PySide6.QtCore import QSettings, Qt  # noqa: E402
from PySide6.QtWidgets import QMessageBox  # noqa: E402

from app.canvas import Tool  # noqa: E402
from app.main_window import MainWindow  # noqa: E402
from app.style import resize_to  # noqa: E402
from oste_core.data import load_mask, open_folder  # noqa: E402
from oste_core.editing import with_corrections  # noqa: E402
from oste_core.engine.trainer import Trainer  # noqa: E402
from oste_core.export import export_folder  # noqa: E402
from oste_core.labels import UNSURE  # noqa: E402
from oste_core.suggest.corrections import corrections_path  # noqa: E402
from test_fast_mode import fast_config  # noqa: E402
from test_gui_app import Questions, drag, one_torch_thread  # noqa: E402, F401 - one intra-op thread (autouse)

Button = QMessageBox.StandardButton


@pytest.fixture(scope="module")
def trained_project(demo_folder: Path, tmp_path_factory) -> Path:
    """The demo folder with one finished fast-mode run in ``runs/`` (trained once)."""
    root = Path(shutil.copytree(demo_folder, tmp_path_factory.mktemp("corr") / "project"))
    Trainer(fast_config(**{"train.iters": 2}), root, root / "runs" / "20260101-000000").run()
    return root


@pytest.fixture
def project_dir(trained_project: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(trained_project, tmp_path / "project"))


def new_window(qtbot, settings_path: Path) -> MainWindow:
    win = MainWindow(QSettings(str(settings_path), QSettings.Format.IniFormat))
    qtbot.addWidget(win)
    win.resize(1100, 760)
    win.show()
    qtbot.waitExposed(win)
    return win


@pytest.fixture
def window(qtbot, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> MainWindow:
    win = new_window(qtbot, tmp_path / "settings.ini")
    yield win
    Questions(monkeypatch, Button.Discard)
    win.close()


def open_and_predict(qtbot, window: MainWindow, root: Path) -> None:
    assert window.folders.open_folder(root)
    qtbot.waitUntil(lambda: window.project.prediction(window.view.stem) is not None, timeout=120_000)


def shown_suggestion(window: MainWindow) -> np.ndarray:
    """The current prediction's suggestion at the image's size."""
    return resize_to(window.project.prediction(window.view.stem).suggestion, window.canvas.document().shape,
                     nearest=True)


def test_a_stroke_is_saved_as_a_correction_lifts_the_suggestion_and_survives_a_restart(
    window: MainWindow, project_dir: Path, qtbot, tmp_path: Path
) -> None:
    open_and_predict(qtbot, window, project_dir)
    stem, canvas, toolbar = window.view.stem, window.canvas, window.edit_toolbar
    doc = canvas.document()
    assert doc.sparse and (doc.mask == UNSURE).all()
    before = shown_suggestion(window)
    tag = window.project.tag_indices(stem)[0]
    row = int(np.argmax((before != tag).sum(axis=1)))  # the row the suggestion labels least as the tag
    columns = np.flatnonzero(before[row] != tag)
    start, end = int(columns[0]), int(columns[min(len(columns) - 1, 20)])
    toolbar.set_tool(Tool.BRUSH)
    toolbar.set_radius(1)
    toolbar.set_class(tag)
    first = window.project.prediction(stem)
    with qtbot.waitSignal(window.inference.refreshFinished, timeout=120_000):
        drag(qtbot, canvas, (start, row), (end, row))
        path = corrections_path(project_dir, stem)
        saved = load_mask(path)  # written at once
        stroke = saved != UNSURE
        assert saved[row, start] == tag and (saved[stroke] == tag).all() and stroke.sum() < saved.size / 4
        assert not (project_dir / "verified" / f"{stem}.png").exists() and not window.image_list.entry(stem).unsaved
        assert window.corrections.indicator.text().startswith(("learning", "refreshing suggestions"))
    assert not window.corrections.indicator.isVisible()
    prediction = window.project.prediction(stem)
    assert prediction is not first
    assert (shown_suggestion(window)[stroke] == tag).all()  # the stroked pixels are the painted class now
    assert window.image_list.entry("demo_0005").uncertainty is not None  # the other images were refreshed too

    # the verified export leaves corrections out
    summary_dir = tmp_path / "export"
    export_folder(open_folder(project_dir), summary_dir, ("voc",), what="verified")
    assert not (summary_dir / "voc" / "SegmentationClass" / f"{stem}.png").exists()

    # undo removes the stroke from the file (the last one: the file goes), redo writes it again
    canvas.setFocus()
    qtbot.keyClick(canvas, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    assert not path.exists() and (doc.mask == UNSURE).all()
    qtbot.keyClick(canvas, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.ShiftModifier)
    np.testing.assert_array_equal(load_mask(path), saved)

    # a restart shows it again, drawn over the suggestion and on the Corrections layer (key 9)
    window.close()
    again = new_window(qtbot, tmp_path / "settings.ini")
    try:
        open_and_predict(qtbot, again, project_dir)
        assert again.view.stem == stem
        reopened = again.canvas.document()
        assert reopened.sparse
        np.testing.assert_array_equal(reopened.mask, saved)
        again.canvas.setFocus()
        qtbot.keyClick(again.canvas, Qt.Key.Key_9)
        assert again.layers_panel.layer() == "corrections"
        again.canvas.grab().save(str(tmp_path / "corrections_layer.png"))
    finally:
        again.close()


def test_ctrl_s_saves_the_suggestion_with_the_strokes_as_the_verified_mask(
    window: MainWindow, project_dir: Path, qtbot
) -> None:
    open_and_predict(qtbot, window, project_dir)
    stem, canvas, toolbar = window.view.stem, window.canvas, window.edit_toolbar
    toolbar.set_tool(Tool.ERASER)  # the eraser labels background
    toolbar.set_radius(2)
    with qtbot.waitSignal(window.inference.refreshFinished, timeout=120_000):
        drag(qtbot, canvas, (10, 20), (40, 20))
    doc = canvas.document()
    strokes = doc.mask.copy()
    assert (strokes[20, 10:41] == 0).all() and (strokes[0] == UNSURE).all()
    expected = with_corrections(shown_suggestion(window), strokes)
    canvas.setFocus()
    with qtbot.waitSignal(window.editor.userSaved, timeout=10_000):
        qtbot.keyClick(canvas, Qt.Key.Key_S, Qt.KeyboardModifier.ControlModifier)
    verified = project_dir / "verified" / f"{stem}.png"
    np.testing.assert_array_equal(load_mask(verified), expected)
    assert not doc.sparse and window.image_list.entry(stem).status == "verified"
    np.testing.assert_array_equal(load_mask(corrections_path(project_dir, stem)), strokes)  # kept as they were
    qtbot.keyClick(canvas, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)  # one step back: the strokes
    assert doc.sparse
    np.testing.assert_array_equal(doc.mask, strokes)

    # S on the next image (not verified) accepts the suggestion as a full mask, undoably
    qtbot.keyClick(canvas, Qt.Key.Key_D)
    qtbot.waitUntil(lambda: window.project.prediction(window.view.stem) is not None, timeout=120_000)
    nxt = canvas.document()
    assert nxt.sparse
    qtbot.keyClick(canvas, Qt.Key.Key_S)
    assert not nxt.sparse
    np.testing.assert_array_equal(nxt.mask, shown_suggestion(window))
    qtbot.keyClick(canvas, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    assert nxt.sparse and (nxt.mask == UNSURE).all()


def test_a_corrections_file_changed_on_disk_is_never_overwritten_silently(
    window: MainWindow, project_dir: Path, qtbot, monkeypatch: pytest.MonkeyPatch
) -> None:
    shutil.rmtree(project_dir / "runs")  # no model needed: corrections are saved without one
    assert window.folders.open_folder(project_dir)
    stem, canvas = window.view.stem, window.canvas
    window.edit_toolbar.set_class(window.project.tag_indices(stem)[0])
    drag(qtbot, canvas, (5, 5), (20, 5))
    path = corrections_path(project_dir, stem)
    theirs = np.full(canvas.document().shape, UNSURE, np.uint8)
    theirs[30:34, 30:34] = 0
    from oste_core.export.palette import save_palette_png

    save_palette_png(path, theirs)  # another program writes the file
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 5_000_000_000))
    questions = Questions(monkeypatch, Button.No)
    drag(qtbot, canvas, (5, 40), (20, 40))
    assert len(questions.asked) == 1 and "corrections file was changed" in questions.asked[0]
    np.testing.assert_array_equal(load_mask(path), theirs)
    assert window.image_list.entry(stem).unsaved
    questions.answer = Button.Yes
    drag(qtbot, canvas, (5, 50), (20, 50))
    np.testing.assert_array_equal(load_mask(path), canvas.document().mask)
    assert not window.image_list.entry(stem).unsaved
