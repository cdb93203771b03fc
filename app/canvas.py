"""The central canvas: image + one overlay layer + the editable mask, zoom/pan and the edit tools.

Zoom with the mouse wheel (around the cursor), `fit` / `actual_size`; pan with the middle button,
space + left drag, or the pan tool. The similar-colour fill reads the image's own pixels. Edits go straight to the `MaskDocument` (Qt-free logic in
`oste_core.editing`); the canvas only converts mouse positions to image pixels and redraws.
"""
from __future__ import annotations

from enum import Enum

import numpy as np
from PySide6.QtCore import QPointF, Qt, Signal
from PySide6.QtGui import QColor, QImage, QKeyEvent, QMouseEvent, QPainter, QPaintEvent, QPen, QWheelEvent
from PySide6.QtWidgets import QSizePolicy, QWidget

from app.style import corrections_rgba, label_rgba, rgb_image, rgba_image
from oste_core.editing import DEFAULT_TOLERANCE, MaskDocument

BACKDROP = QColor(48, 48, 52)
MIN_SCALE, MAX_SCALE = 0.02, 40.0
CLOSE_POLYGON_PX = 8.0


class Tool(str, Enum):
    PAN = "pan"
    BRUSH = "brush"
    ERASER = "eraser"
    FILL = "fill"
    COLOR_FILL = "color_fill"
    POLYGON = "polygon"


class Canvas(QWidget):
    """Shows an RGB image, an RGBA overlay (a CAM/label layer) and the document's mask."""

    maskEdited = Signal()  # after a finished edit (stroke released, fill, polygon closed)
    cursorMoved = Signal(int, int)  # image pixel under the mouse
    zoomChanged = Signal(float)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setMouseTracking(True)
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.setMinimumSize(240, 180)
        self._image: QImage | None = None
        self._rgb: np.ndarray | None = None  # the image's pixels, for the similar-colour fill
        self._overlay: QImage | None = None
        self._mask_rgba: np.ndarray | None = None
        self._mask_image: QImage | None = None
        self._document: MaskDocument | None = None
        self._suggestion: np.ndarray | None = None  # (H, W) labels under a corrections document, for the fills
        self._message = "Open a folder to start (File > Open folder, or oste-gui --demo)"
        self._opacity = 0.55
        self._mask_visible = True
        self._scale = 1.0
        self._offset = QPointF(0.0, 0.0)
        self._fitted = True
        self._tool = Tool.BRUSH
        self._radius = 6
        self._value = 1
        self._tolerance = DEFAULT_TOLERANCE
        self._space_down = False
        self._pan_from: QPointF | None = None
        self._stroke_last: QPointF | None = None
        self._polygon: list[QPointF] = []
        self._hover: QPointF | None = None

    # ------------------------------------------------------------ content
    def set_image(self, rgb: np.ndarray | None) -> None:
        """Show a new (H, W, 3) image (None: show the message instead) and fit it to the view."""
        self._image = rgb_image(rgb) if rgb is not None else None
        self._rgb = rgb
        self._overlay = None
        self._polygon.clear()
        self.fit()

    def set_message(self, text: str) -> None:
        """Text shown where there is no image (e.g. why an image could not be read)."""
        self._message = text
        self.update()

    def image_size(self) -> tuple[int, int] | None:
        """(H, W) of the shown image."""
        return None if self._image is None else (self._image.height(), self._image.width())

    def set_overlay(self, rgba: np.ndarray | None) -> None:
        """The layer drawn over the image, (H, W, 4) at the image size, or None."""
        self._overlay = rgba_image(rgba) if rgba is not None else None
        self.update()

    def set_opacity(self, opacity: float) -> None:
        self._opacity = float(min(max(opacity, 0.0), 1.0))
        self.update()

    def set_mask_visible(self, visible: bool) -> None:
        self._mask_visible = visible
        self.update()

    def document(self) -> MaskDocument | None:
        return self._document

    def set_document(self, document: MaskDocument | None) -> None:
        """The mask being edited (drawn over the layer); edits go to it."""
        if self._document is not None:
            self._document.end_stroke()
        self._stroke_last = None
        self._document = document
        self.refresh_mask()

    def set_suggestion(self, labels: np.ndarray | None) -> None:
        """The suggestion (H, W) a corrections document is drawn over: the fills follow what the user sees."""
        self._suggestion = labels

    def refresh_mask(self, box: tuple[int, int, int, int] | None = None) -> None:
        """Re-render the mask colours, all of it or only ``box`` = (y0, y1, x0, x1); a corrections
        document leaves "no correction" clear, so the suggestion shows through."""
        doc = self._document
        if doc is None:
            self._mask_rgba, self._mask_image = None, None
        elif box is None or self._mask_rgba is None or self._mask_rgba.shape[:2] != doc.shape:
            self._mask_rgba = np.ascontiguousarray(self._render(doc.mask))
            self._mask_image = self._wrap(self._mask_rgba)
        else:
            y0, y1, x0, x1 = box
            self._mask_rgba[y0:y1, x0:x1] = self._render(doc.mask[y0:y1, x0:x1], (y0, x0))
        self.update()

    def _render(self, labels: np.ndarray, origin: tuple[int, int] = (0, 0)) -> np.ndarray:
        if self._document is not None and self._document.sparse:
            return corrections_rgba(labels, origin)
        return label_rgba(labels, origin=origin)

    @staticmethod
    def _wrap(rgba: np.ndarray) -> QImage:
        """A QImage sharing the buffer, so partial re-renders need no copy."""
        h, w, _ = rgba.shape
        return QImage(rgba.data, w, h, 4 * w, QImage.Format.Format_RGBA8888)

    # --------------------------------------------------------------- tools
    def tool(self) -> Tool:
        return self._tool

    def set_tool(self, tool: Tool | str) -> None:
        self._tool = Tool(tool)
        self._polygon.clear()
        self._update_cursor()
        self.update()

    def _update_cursor(self) -> None:
        if self._pan_from is not None:
            self.setCursor(Qt.CursorShape.ClosedHandCursor)
        elif self._space_down or self._tool is Tool.PAN:
            self.setCursor(Qt.CursorShape.OpenHandCursor)
        else:
            self.setCursor(Qt.CursorShape.CrossCursor)

    def set_brush_radius(self, radius: int) -> None:
        self._radius = max(int(radius), 0)
        self.update()

    def set_paint_value(self, value: int) -> None:
        """The class index (or 255 unsure) the brush, fill and polygon paint."""
        self._value = int(value)

    def paint_value(self) -> int:
        return self._value

    def set_tolerance(self, tolerance: int) -> None:
        """Per-channel colour distance of the similar-colour fill (0..255)."""
        self._tolerance = int(tolerance)

    def cancel_polygon(self) -> None:
        self._polygon.clear()
        self.update()

    def close_polygon(self) -> bool:
        """Fill the polygon drawn so far (needs 3 vertices); True when the mask changed."""
        points, self._polygon = self._polygon, []
        changed = False
        if self._document is not None and len(points) >= 3:
            changed = self._document.polygon_fill([(p.x() - 0.5, p.y() - 0.5) for p in points], self._value)
        self._after_edit(changed)
        return changed

    # ---------------------------------------------------------------- view
    def scale(self) -> float:
        return self._scale

    def fit(self) -> None:
        """Zoom so the whole image is visible, centred."""
        self._fitted = True
        if self._image is not None and self._image.width() and self._image.height():
            scale = min(self.width() / self._image.width(), self.height() / self._image.height()) * 0.98
            self._set_view(scale, self._centred_offset(scale))
        self.update()

    def actual_size(self) -> None:
        """1:1 zoom, keeping the image point at the view centre in place."""
        centre = QPointF(self.width() / 2, self.height() / 2)
        self.zoom_by(1.0 / self._scale, centre)

    def zoom_by(self, factor: float, anchor: QPointF | None = None) -> None:
        """Multiply the zoom by ``factor`` keeping the image point under ``anchor`` fixed."""
        if self._image is None:
            return
        anchor = anchor if anchor is not None else QPointF(self.width() / 2, self.height() / 2)
        scale = min(max(self._scale * factor, MIN_SCALE), MAX_SCALE)
        offset = anchor - (anchor - self._offset) * (scale / self._scale)
        self._fitted = False
        self._set_view(scale, offset)

    def _centred_offset(self, scale: float) -> QPointF:
        return QPointF((self.width() - self._image.width() * scale) / 2,
                       (self.height() - self._image.height() * scale) / 2)

    def _set_view(self, scale: float, offset: QPointF) -> None:
        changed = scale != self._scale
        self._scale, self._offset = scale, offset
        self.update()
        if changed:
            self.zoomChanged.emit(scale)

    def to_image(self, pos: QPointF) -> QPointF:
        """Widget position -> image coordinates (pixel (i, j) covers [i, i+1) x [j, j+1))."""
        return (pos - self._offset) / self._scale

    def to_widget(self, x: float, y: float) -> QPointF:
        """Image coordinates -> widget position (the centre of pixel (x, y) is at x + 0.5)."""
        return QPointF(x, y) * self._scale + self._offset

    # -------------------------------------------------------------- events
    def resizeEvent(self, event) -> None:  # noqa: N802 - Qt API
        super().resizeEvent(event)
        if self._fitted:
            self.fit()

    def wheelEvent(self, event: QWheelEvent) -> None:  # noqa: N802
        steps = event.angleDelta().y() / 120.0
        if steps:
            self.zoom_by(1.2**steps, event.position())
        event.accept()

    def keyPressEvent(self, event: QKeyEvent) -> None:  # noqa: N802
        key = event.key()
        if key == Qt.Key.Key_Space and not event.isAutoRepeat():
            self._space_down = True
            self._update_cursor()
        elif key in (Qt.Key.Key_Return, Qt.Key.Key_Enter) and self._polygon:
            self.close_polygon()
        elif key == Qt.Key.Key_Escape and self._polygon:
            self.cancel_polygon()
        elif key == Qt.Key.Key_Backspace and self._polygon:
            self._polygon.pop()
            self.update()
        else:
            super().keyPressEvent(event)

    def keyReleaseEvent(self, event: QKeyEvent) -> None:  # noqa: N802
        if event.key() == Qt.Key.Key_Space and not event.isAutoRepeat():
            self._space_down = False
            self._update_cursor()
        else:
            super().keyReleaseEvent(event)

    def mousePressEvent(self, event: QMouseEvent) -> None:  # noqa: N802
        pos = event.position()
        button = event.button()
        pan = button == Qt.MouseButton.MiddleButton or (
            button == Qt.MouseButton.LeftButton and (self._space_down or self._tool is Tool.PAN))
        if pan:
            self._pan_from = pos
            self._update_cursor()
            return
        if button != Qt.MouseButton.LeftButton or self._document is None or self._image is None:
            return
        point = self.to_image(pos)
        if self._tool in (Tool.BRUSH, Tool.ERASER):
            self._document.begin_stroke()
            self._stroke_last = point
            self._paint_segment(point, point)
        elif self._tool is Tool.FILL:
            changed = self._document.flood_fill(int(np.floor(point.x())), int(np.floor(point.y())), self._value,
                                                suggestion=self._suggestion)
            self._after_edit(changed)
        elif self._tool is Tool.COLOR_FILL:
            changed = self._document.color_fill(self._rgb, int(np.floor(point.x())), int(np.floor(point.y())),
                                                self._value, self._tolerance, suggestion=self._suggestion)
            self._after_edit(changed)
        elif self._tool is Tool.POLYGON:
            if len(self._polygon) >= 3 and self._near_first_vertex(pos):
                self.close_polygon()
            else:
                self._polygon.append(point)
                self.update()

    def _near_first_vertex(self, pos: QPointF) -> bool:
        """A click this close to the first vertex (screen pixels) closes the polygon."""
        first = self.to_widget(self._polygon[0].x(), self._polygon[0].y())
        return (pos - first).manhattanLength() <= CLOSE_POLYGON_PX

    def mouseDoubleClickEvent(self, event: QMouseEvent) -> None:  # noqa: N802
        if self._tool is Tool.POLYGON and len(self._polygon) >= 3:
            self.close_polygon()
        else:
            super().mouseDoubleClickEvent(event)

    def mouseMoveEvent(self, event: QMouseEvent) -> None:  # noqa: N802
        pos = event.position()
        point = self.to_image(pos)
        self._hover = point
        if self._pan_from is not None:
            self._fitted = False
            self._set_view(self._scale, self._offset + (pos - self._pan_from))
            self._pan_from = pos
            return
        if self._stroke_last is not None:
            self._paint_segment(self._stroke_last, point)
            self._stroke_last = point
        self.cursorMoved.emit(int(np.floor(point.x())), int(np.floor(point.y())))
        self.update()

    def mouseReleaseEvent(self, event: QMouseEvent) -> None:  # noqa: N802
        if self._pan_from is not None and event.button() in (Qt.MouseButton.MiddleButton, Qt.MouseButton.LeftButton):
            self._pan_from = None
            self._update_cursor()
            return
        if self._stroke_last is not None and event.button() == Qt.MouseButton.LeftButton:
            self._stroke_last = None
            self._document.end_stroke()
            self.maskEdited.emit()

    def leaveEvent(self, event) -> None:  # noqa: N802
        self._hover = None
        self.update()
        super().leaveEvent(event)

    def _paint_segment(self, start: QPointF, end: QPointF) -> None:
        doc = self._document
        points = [(start.x() - 0.5, start.y() - 0.5), (end.x() - 0.5, end.y() - 0.5)]
        if self._tool is Tool.ERASER:
            changed = doc.erase(points, self._radius)
        else:
            changed = doc.brush(points, self._radius, self._value)
        if changed:
            h, w = doc.shape
            r = self._radius + 2
            xs, ys = (points[0][0], points[1][0]), (points[0][1], points[1][1])
            box = (max(int(min(ys)) - r, 0), min(int(max(ys)) + r + 1, h),
                   max(int(min(xs)) - r, 0), min(int(max(xs)) + r + 1, w))
            self.refresh_mask(box)

    def _after_edit(self, changed: bool) -> None:
        if changed:
            self.refresh_mask()
            self.maskEdited.emit()
        self.update()

    # ------------------------------------------------------------- drawing
    def paintEvent(self, event: QPaintEvent) -> None:  # noqa: N802
        painter = QPainter(self)
        painter.fillRect(self.rect(), BACKDROP)
        if self._image is None:
            painter.setPen(QColor(220, 220, 220))
            painter.drawText(self.rect().adjusted(20, 20, -20, -20),
                             Qt.AlignmentFlag.AlignCenter | Qt.TextFlag.TextWordWrap, self._message)
            painter.end()
            return
        painter.save()
        painter.translate(self._offset)
        painter.scale(self._scale, self._scale)
        painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, self._scale < 1.0)
        painter.drawImage(0, 0, self._image)
        painter.setOpacity(self._opacity)
        if self._overlay is not None:
            painter.drawImage(0, 0, self._overlay)
        if self._mask_visible and self._mask_image is not None:
            painter.drawImage(0, 0, self._mask_image)
        painter.restore()
        self._draw_tool_feedback(painter)
        painter.end()

    def _draw_tool_feedback(self, painter: QPainter) -> None:
        painter.setRenderHint(QPainter.RenderHint.Antialiasing, True)
        if self._polygon:
            painter.setPen(QPen(QColor(255, 255, 255), 1.5, Qt.PenStyle.DashLine))
            points = [self.to_widget(p.x(), p.y()) for p in self._polygon]
            if self._hover is not None:
                points.append(self.to_widget(self._hover.x(), self._hover.y()))
            for a, b in zip(points[:-1], points[1:]):
                painter.drawLine(a, b)
            painter.setBrush(QColor(255, 255, 255))
            for p in points[: len(self._polygon)]:
                painter.drawEllipse(p, 3, 3)
        if self._hover is not None and self._tool in (Tool.BRUSH, Tool.ERASER) and self._pan_from is None:
            centre = self.to_widget(np.floor(self._hover.x()) + 0.5, np.floor(self._hover.y()) + 0.5)
            radius = (self._radius + 0.5) * self._scale
            painter.setBrush(Qt.BrushStyle.NoBrush)
            painter.setPen(QPen(QColor(0, 0, 0), 2.5))
            painter.drawEllipse(centre, radius, radius)
            painter.setPen(QPen(QColor(255, 255, 255), 1.0))
            painter.drawEllipse(centre, radius, radius)

