"""GUI widgets on their own (pytest-qt, offscreen): canvas, list, layers, plot, colours, toolbar (the training panel: test_gui_panels.py)."""
from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from PySide6.QtCore import QPoint, Qt  # noqa: E402
from PySide6.QtGui import QImage  # noqa: E402

from app.canvas import Canvas, Tool  # noqa: E402
from app.edit_toolbar import EditToolbar  # noqa: E402
from app.image_list import ImageList  # noqa: E402
from app.layers_dock import LayersPanel, layer_note, layer_rgba  # noqa: E402
from app.loss_plot import LossPlot  # noqa: E402
from app.main import build_parser, display_available  # noqa: E402
from app.project import ListEntry, ensure_demo  # noqa: E402
from app.refresh_indicator import RefreshIndicator  # noqa: E402
from app.style import corrections_rgba, heatmap_rgba, label_rgba  # noqa: E402
from app.training_panel import TrainingPanel, format_duration  # noqa: E402
from oste_core.editing import MaskDocument  # noqa: E402
from oste_core.labels import UNSURE  # noqa: E402
from oste_core.engine.predictor import Prediction  # noqa: E402
from oste_core.engine.trainer import TrainEvent  # noqa: E402
from oste_core.export import VOC_PALETTE  # noqa: E402


def grab_array(widget) -> np.ndarray:
    image = widget.grab().toImage().convertToFormat(QImage.Format.Format_RGB888)
    width, height = image.width(), image.height()
    data = np.frombuffer(image.constBits(), np.uint8, count=image.bytesPerLine() * height)
    return data.reshape(height, image.bytesPerLine())[:, : 3 * width].reshape(height, width, 3).copy()


@pytest.fixture
def canvas(qtbot) -> Canvas:
    widget = Canvas()
    qtbot.addWidget(widget)
    widget.resize(300, 300)
    widget.show()
    qtbot.waitExposed(widget)
    image = np.zeros((40, 40, 3), np.uint8)
    image[:, :, 1] = 100
    widget.set_image(image)
    widget.set_document(MaskDocument(np.zeros((40, 40), np.uint8), "img"))
    return widget


def test_label_and_heatmap_colours() -> None:
    labels = np.array([[0, 1], [2, UNSURE]], np.uint8)
    rgba = label_rgba(labels)
    assert rgba[0, 0, 3] == 0  # background is transparent
    assert tuple(rgba[0, 1, :3]) == tuple(VOC_PALETTE[1]) and rgba[0, 1, 3] == 255
    assert tuple(rgba[1, 0, :3]) == tuple(VOC_PALETTE[2])
    assert rgba[1, 1, 3] == 255 and rgba[1, 1, 0] in (90, 255)  # unsure: hatched grey/white
    heat = heatmap_rgba(np.array([[0.0, 1.0]], np.float32), "JET")
    assert heat[0, 0, 2] > heat[0, 0, 0] and heat[0, 1, 0] > heat[0, 1, 2]  # blue -> red
    assert not np.array_equal(heatmap_rgba(np.array([[0.5]]), "Viridis"), heatmap_rgba(np.array([[0.5]]), "JET"))


def test_canvas_fit_zoom_and_coordinates(canvas: Canvas) -> None:
    assert (canvas.width(), canvas.height()) == (300, 300)
    assert canvas.scale() == pytest.approx(300 / 40 * 0.98)
    centre = canvas.to_widget(20, 20)
    assert (centre.x(), centre.y()) == pytest.approx((150, 150))
    canvas.zoom_by(2.0, centre)
    assert canvas.scale() == pytest.approx(300 / 40 * 0.98 * 2)
    moved = canvas.to_widget(20, 20)
    assert (moved.x(), moved.y()) == pytest.approx((150, 150))  # the anchor stays put
    canvas.actual_size()
    assert canvas.scale() == pytest.approx(1.0)
    canvas.fit()
    assert canvas.scale() == pytest.approx(300 / 40 * 0.98)


def test_canvas_brush_stroke_is_one_undo_step_and_changes_pixels(canvas: Canvas, qtbot) -> None:
    canvas.set_opacity(1.0)
    canvas.set_tool(Tool.BRUSH)
    canvas.set_brush_radius(2)
    canvas.set_paint_value(1)
    before = grab_array(canvas)
    with qtbot.waitSignal(canvas.maskEdited):
        start, end = canvas.to_widget(10.5, 20.5).toPoint(), canvas.to_widget(30.5, 20.5).toPoint()
        qtbot.mousePress(canvas, Qt.MouseButton.LeftButton, pos=start)
        qtbot.mouseMove(canvas, end)
        qtbot.mouseRelease(canvas, Qt.MouseButton.LeftButton, pos=end)
    doc = canvas.document()
    assert (doc.mask[20, 10:31] == 1).all() and doc.mask[0, 0] == 0
    after = grab_array(canvas)
    centre = canvas.to_widget(20.5, 20.5).toPoint()
    assert tuple(after[centre.y(), centre.x()]) == tuple(VOC_PALETTE[1])
    assert not np.array_equal(before, after)
    assert doc.undo() and not doc.undo()  # the whole drag was a single step
    assert (doc.mask == 0).all()


def test_canvas_fill_polygon_and_pan(canvas: Canvas, qtbot) -> None:
    canvas.set_paint_value(UNSURE)
    canvas.set_tool(Tool.POLYGON)
    for x, y in ((5, 5), (15, 5), (15, 15), (5, 15)):
        qtbot.mouseClick(canvas, Qt.MouseButton.LeftButton, pos=canvas.to_widget(x, y).toPoint())
    with qtbot.waitSignal(canvas.maskEdited):
        qtbot.keyClick(canvas, Qt.Key.Key_Return)
    doc = canvas.document()
    assert doc.mask[10, 10] == UNSURE and doc.mask[20, 20] == 0

    canvas.set_tool(Tool.FILL)
    canvas.set_paint_value(3)
    with qtbot.waitSignal(canvas.maskEdited):
        qtbot.mouseClick(canvas, Qt.MouseButton.LeftButton, pos=canvas.to_widget(30.5, 30.5).toPoint())
    assert doc.mask[30, 30] == 3 and doc.mask[10, 10] == UNSURE

    before = canvas.to_widget(0, 0)
    qtbot.mousePress(canvas, Qt.MouseButton.MiddleButton, pos=QPoint(100, 100))
    qtbot.mouseMove(canvas, QPoint(120, 90))
    qtbot.mouseRelease(canvas, Qt.MouseButton.MiddleButton, pos=QPoint(120, 90))
    after = canvas.to_widget(0, 0)
    assert (after.x() - before.x(), after.y() - before.y()) == pytest.approx((20, -10))
    assert doc.mask[30, 30] == 3  # panning does not paint


def test_canvas_overlay_changes_pixels(canvas: Canvas) -> None:
    canvas.set_opacity(1.0)
    plain = grab_array(canvas)
    canvas.set_overlay(heatmap_rgba(np.ones((40, 40), np.float32)))
    red = grab_array(canvas)
    centre = canvas.to_widget(20, 20).toPoint()
    assert not np.array_equal(plain, red) and red[centre.y(), centre.x(), 0] > 100


def test_edit_toolbar_paint_value_and_tools(qtbot) -> None:
    toolbar = EditToolbar()
    qtbot.addWidget(toolbar)
    with qtbot.waitSignal(toolbar.paintValueChanged, check_params_cb=lambda v: v == 2):
        toolbar.set_classes([(0, "background"), (2, "square"), (4, "star")])
    toolbar.set_class(4)
    assert toolbar.paint_value() == 4
    toolbar.set_unsure(True)
    assert toolbar.paint_value() == UNSURE
    with qtbot.waitSignal(toolbar.toolChanged, check_params_cb=lambda t: t == "eraser"):
        toolbar.set_tool(Tool.ERASER)
    assert toolbar.tool() is Tool.ERASER


def test_layers_panel_number_keys_respect_availability(qtbot) -> None:
    panel = LayersPanel()
    qtbot.addWidget(panel)
    assert panel.layer() == "suggestion"  # the default layer
    panel.set_available({"image", "gt"})
    panel.set_layer_number(3)  # the CAM needs a prediction: stays where it was
    assert panel.layer() == "suggestion"
    with qtbot.waitSignal(panel.layerChanged, check_params_cb=lambda k: k == "gt"):
        panel.set_layer_number(8)
    panel.set_classes(["circle", "square", "ring"], preferred=[3])
    assert panel.cam_class() == 3


def test_image_list_filters_counts_steps_and_review_order(qtbot) -> None:
    widget = ImageList()
    qtbot.addWidget(widget)
    entries = [ListEntry("a", "verified", ["circle"]), ListEntry("b", "pseudo", ["square"], uncertainty=0.1),
               ListEntry("c", "error", [], message="c.png: corrupt"), ListEntry("d", "pseudo", ["circle"], uncertainty=0.4)]
    widget.set_entries(entries, ["circle", "square"])
    assert widget.visible_stems() == ["a", "b", "c", "d"]
    assert "4 of 4 images shown" in widget.counts.text() and "1 error" in widget.counts.text()
    widget.tag_filter.setCurrentIndex(widget.tag_filter.findData("circle"))
    assert widget.visible_stems() == ["a", "d"]
    widget.status_filter.setCurrentIndex(widget.status_filter.findData("pseudo"))
    assert widget.visible_stems() == ["d"]
    widget.status_filter.setCurrentIndex(0)
    widget.tag_filter.setCurrentIndex(0)
    with qtbot.waitSignal(widget.currentChanged, check_params_cb=lambda s: s == "a"):
        widget.step(+1)
    widget.step(+1)
    assert widget.current_stem() == "b"
    widget.set_sort_by_uncertainty(True)
    assert widget.visible_stems() == ["d", "b", "a", "c"] and widget.current_stem() == "b"
    widget.update_entry(ListEntry("a", "error", ["circle"], message="broken"))
    assert widget.list.item(2).toolTip().endswith("broken")


def test_training_panel_builds_the_config_and_shows_progress(qtbot) -> None:
    panel = TrainingPanel(["auto", "cpu"])
    qtbot.addWidget(panel)
    assert panel.backbone.currentText() == "efficientnet_lite0"
    panel.iters.setValue(6)
    panel.alpha.setValue(0.5)
    panel.use_maf.setChecked(False)
    panel.device.setCurrentText("cpu")
    panel.set_extra_overrides({"train.workers": 0, "model.cam_scales": (1.0,)})
    cfg = panel.config()
    assert (cfg.train.iters, cfg.model.alpha, cfg.model.use_maf, cfg.train.device) == (6, 0.5, False, "cpu")
    assert cfg.train.workers == 0 and cfg.model.cam_scales == (1.0,)
    panel.show_event(TrainEvent("start", 0, 6))
    panel.show_event(TrainEvent("progress", 3, 6, {"total": 1.5, "cls": 0.7}, 0.01, 4.0, 75.0))
    assert panel.progress.value() == 3 and "ETA 1:15" in panel.stats.text()
    assert panel.plot.series()["total"] == [(3, 1.5)]
    # the fast mode's passes at the end: the pixel classifier learns from every image's suggestion
    panel.show_event(TrainEvent("probe", 40, 180, message="pixel classifier: suggestion 40/180 (9 s)"))
    assert (panel.progress.value(), panel.progress.maximum()) == (40, 180)
    assert panel.progress.text().startswith("pixel classifier") and "40/180" in panel.stats.text()
    assert panel.plot.series()["total"] == [(3, 1.5)]  # no loss point from it
    # then MAF's affinity is taught again: images first, then its optimiser steps
    panel.show_event(TrainEvent("affinity", 200, 280, message="MAF affinity: pseudo-labels, then steps 200/280 (50 s)"))
    assert (panel.progress.value(), panel.progress.maximum()) == (200, 280)
    assert panel.progress.text().startswith("MAF affinity") and "200/280" in panel.stats.text()
    assert format_duration(3725) == "1:02:05"


def test_loss_plot_draws_the_curves(qtbot) -> None:
    plot = LossPlot()
    qtbot.addWidget(plot)
    plot.resize(300, 150)
    empty = grab_array(plot)
    for i in range(1, 20):
        plot.add_point(i, {"total": 2.0 / i, "cls": 1.0 / i, "bad": float("nan")})
    drawn = grab_array(plot)
    assert set(plot.series()) == {"total", "cls"}
    assert (np.abs(drawn.astype(int) - empty.astype(int)).sum(axis=2) > 60).sum() > 100


def test_demo_project_is_written_once(tmp_path) -> None:
    demo = ensure_demo(tmp_path / "demo", n=3, size=32)
    tags = (demo / "tags.csv").stat().st_mtime_ns
    assert len(list(demo.glob("demo_*.png"))) == 3
    assert ensure_demo(tmp_path / "demo", n=3, size=32) == demo
    assert (demo / "tags.csv").stat().st_mtime_ns == tags


def test_launcher_arguments_and_display_detection() -> None:
    args = build_parser().parse_args(["--demo"])
    assert args.demo and args.folder is None
    assert build_parser().parse_args(["data"]).folder.name == "data"
    assert not display_available({}, "linux")
    assert display_available({"WAYLAND_DISPLAY": "wayland-0"}, "linux")
    assert display_available({"QT_QPA_PLATFORM": "offscreen"}, "linux")
    assert display_available({}, "win32") and display_available({}, "darwin")


def test_layer_notes_explain_empty_layers() -> None:
    zeros = np.zeros((2, 8, 8), np.float32)
    cams = zeros.copy()
    cams[1, 3, 3] = 1.0
    labels = np.zeros((8, 8), np.uint8)
    prediction = Prediction(cams, zeros, zeros, labels, labels + 1, labels.astype(np.float32), labels,
                            labels.astype(np.float32), [1, 2])
    assert "'circle' is zero everywhere" in layer_note("cam", prediction, 1, ["circle", "square"])
    assert layer_note("cam", prediction, 2, ["circle", "square"]) == ""
    assert "background everywhere" in layer_note("pseudo_label", prediction, 1, ["circle", "square"])
    assert layer_note("seg", prediction, 1, ["circle", "square"]) == ""
    assert "background everywhere" in layer_note("suggestion", prediction, 1, ["circle", "square"])
    assert layer_note("cam", None, 1, ["circle"]) == ""


def test_canvas_similar_colour_fill_paints_the_clicked_image_region(canvas: Canvas, qtbot) -> None:
    widget = canvas
    image = np.full((40, 40, 3), 30, np.uint8)
    image[10:30, 5:20] = (210, 180, 40)  # a yellow block; the rest is dark
    widget.set_image(image)
    toolbar = EditToolbar()
    qtbot.addWidget(toolbar)
    toolbar.toolChanged.connect(widget.set_tool)
    toolbar.set_tool(Tool.COLOR_FILL)
    widget.set_paint_value(2)
    with qtbot.waitSignal(widget.maskEdited):
        qtbot.mouseClick(widget, Qt.MouseButton.LeftButton, pos=widget.to_widget(12.5, 20.5).toPoint())
    mask = widget.document().mask
    assert (mask[12:28, 7:18] == 2).all() and (mask[:, 25:] == 0).all() and mask[5, 5] == 0
    assert widget.document().undo() and not widget.document().mask.any()


def test_edit_toolbar_unsure_icon_is_not_a_question_mark_and_tolerance_shows_with_its_tool(qtbot) -> None:
    import qtawesome

    toolbar = EditToolbar()
    qtbot.addWidget(toolbar)
    toolbar.show()
    unsure = next(a for a in toolbar.actions() if a.text().startswith("Mark unsure"))

    def pixels(qicon) -> bytes:
        image = qicon.pixmap(24, 24).toImage().convertToFormat(QImage.Format.Format_RGBA8888)
        return bytes(image.constBits())

    assert pixels(unsure.icon()) != pixels(qtawesome.icon("fa5s.question"))
    tolerance = next(a for a in toolbar.actions() if toolbar.widgetForAction(a) is toolbar._tolerance)
    assert not tolerance.isVisible()
    toolbar.set_tool(Tool.COLOR_FILL)
    assert tolerance.isVisible()
    with qtbot.waitSignal(toolbar.toleranceChanged, check_params_cb=lambda v: v == 40):
        toolbar.set_tolerance(40)


def test_image_list_review_progress_has_a_cancel_button(qtbot) -> None:
    widget = ImageList()
    qtbot.addWidget(widget)
    widget.show()
    widget.set_entries([ListEntry("a", "pseudo", rel="deep/folder/a.jpg")], [])
    assert widget.list.item(0).text() == "a.jpg" and widget.list.item(0).toolTip().startswith("deep/folder/a.jpg")
    widget.set_sort_progress(3, 10)
    assert widget.sort_progress.isVisible() and widget.sort_progress.value() == 3
    assert widget.cancel_review_button.isVisible() and not widget.review_button.isEnabled()
    with qtbot.waitSignal(widget.reviewCancelRequested):
        widget.cancel_review_button.click()
    widget.set_sort_progress(0, 0)
    assert not widget.cancel_review_button.isVisible() and widget.review_button.isEnabled()


def test_suggestion_layer_fades_with_its_confidence() -> None:
    suggestion = np.array([[0, 2], [2, 2]], np.uint8)
    confidence = np.array([[1.0, 1.0], [0.0, 0.5]], np.float32)
    zeros = np.zeros((2, 2, 2), np.float32)
    prediction = Prediction(zeros, zeros, zeros, suggestion, suggestion, confidence, suggestion, confidence, [2])
    rgba = layer_rgba("suggestion", (4, 4), prediction, 2, "JET")
    assert rgba.shape == (4, 4, 4) and tuple(rgba[0, 3, :3]) == tuple(VOC_PALETTE[2])
    assert rgba[0, 3, 3] == 255 and 0 < rgba[3, 0, 3] < rgba[3, 3, 3] < 255  # confident pixels are opaque
    assert rgba[0, 0, 3] == 150  # background darkened like the other label layers


def test_canvas_corrections_document_draws_only_the_strokes_and_fills_the_suggestion_region(
    canvas: Canvas, qtbot
) -> None:
    canvas.set_opacity(1.0)
    plain = grab_array(canvas)
    doc = MaskDocument(np.full((40, 40), UNSURE, np.uint8), "img", sparse=True)
    canvas.set_document(doc)
    assert np.array_equal(grab_array(canvas), plain)  # "no correction" is clear, never hatched
    suggestion = np.zeros((40, 40), np.uint8)
    suggestion[5:20, 5:20] = 1  # the suggested object
    canvas.set_suggestion(suggestion)
    canvas.set_tool(Tool.FILL)
    canvas.set_paint_value(3)
    with qtbot.waitSignal(canvas.maskEdited):
        qtbot.mouseClick(canvas, Qt.MouseButton.LeftButton, pos=canvas.to_widget(10.5, 10.5).toPoint())
    assert (doc.mask[5:20, 5:20] == 3).all() and (doc.mask[suggestion == 0] == UNSURE).all()
    canvas.set_tool(Tool.ERASER)
    canvas.set_brush_radius(1)
    qtbot.mousePress(canvas, Qt.MouseButton.LeftButton, pos=canvas.to_widget(30.5, 30.5).toPoint())
    qtbot.mouseRelease(canvas, Qt.MouseButton.LeftButton, pos=canvas.to_widget(30.5, 30.5).toPoint())
    assert doc.mask[30, 30] == 0  # the eraser labels background
    shot = grab_array(canvas)
    inside, outside = canvas.to_widget(10.5, 10.5).toPoint(), canvas.to_widget(35.5, 5.5).toPoint()
    assert tuple(shot[inside.y(), inside.x()]) == tuple(VOC_PALETTE[3])
    assert np.array_equal(shot[outside.y(), outside.x()], plain[outside.y(), outside.x()])
    erased = canvas.to_widget(30.5, 30.5).toPoint()
    assert shot[erased.y(), erased.x()].sum() < plain[erased.y(), erased.x()].sum()  # background darkens
    rgba = corrections_rgba(np.array([[UNSURE, 0, 2]], np.uint8))
    assert rgba[0, 0, 3] == 0 and 0 < rgba[0, 1, 3] < 255 and rgba[0, 2, 3] == 255


def test_layers_panel_has_a_corrections_layer_on_key_9(qtbot) -> None:
    panel = LayersPanel()
    qtbot.addWidget(panel)
    panel.set_available({"image"})
    panel.set_layer_number(9)
    assert panel.layer() == "suggestion"  # no corrections for this image
    panel.set_available({"image", "corrections"})
    panel.set_layer_number(9)
    assert panel.layer() == "corrections"
    strokes = np.full((4, 4), UNSURE, np.uint8)
    strokes[1, 1] = 2
    rgba = layer_rgba("corrections", (4, 4), None, 1, "JET", corrections=strokes)
    assert rgba[1, 1, 3] == 255 and tuple(rgba[1, 1, :3]) == tuple(VOC_PALETTE[2]) and rgba[0, 0, 3] == 0


def test_refresh_indicator_counts_the_refreshed_suggestions(qtbot) -> None:
    indicator = RefreshIndicator()
    qtbot.addWidget(indicator)
    assert indicator.text() == ""
    indicator.show_progress(0, 180)
    assert indicator.text() == "learning from your corrections ..."
    indicator.show_progress(37, 180)
    assert indicator.text() == "refreshing suggestions 37/180"
    indicator.finish()
    assert indicator.text() == "" and not indicator.isVisible()
