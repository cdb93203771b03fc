"""A small live loss plot drawn with QPainter (no charting library): one line per loss term."""
from __future__ import annotations

import math

from PySide6.QtCore import QPointF, QRectF, Qt
from PySide6.QtGui import QColor, QPainter, QPainterPath, QPaintEvent, QPen
from PySide6.QtWidgets import QSizePolicy, QWidget

SERIES_COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2"]
MARGIN_LEFT, MARGIN_RIGHT, MARGIN_TOP, MARGIN_BOTTOM = 44, 10, 8, 20


class LossPlot(QWidget):
    """Loss curves against the iteration; "total" is drawn thick, the terms thin."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setMinimumSize(220, 70)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self._series: dict[str, list[tuple[int, float]]] = {}

    def clear(self) -> None:
        self._series.clear()
        self.update()

    def add_point(self, iteration: int, losses: dict[str, float]) -> None:
        """Append one value per loss term (non-finite values are skipped)."""
        for name, value in losses.items():
            if math.isfinite(value):
                self._series.setdefault(name, []).append((iteration, float(value)))
        self.update()

    def series(self) -> dict[str, list[tuple[int, float]]]:
        return {name: list(points) for name, points in self._series.items()}

    def paintEvent(self, event: QPaintEvent) -> None:  # noqa: N802 - Qt API
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing, True)
        painter.fillRect(self.rect(), self.palette().base())
        plot = QRectF(MARGIN_LEFT, MARGIN_TOP, self.width() - MARGIN_LEFT - MARGIN_RIGHT,
                      self.height() - MARGIN_TOP - MARGIN_BOTTOM)
        text_pen = QPen(self.palette().text().color())
        painter.setPen(QPen(QColor(170, 170, 170)))
        painter.drawRect(plot)
        points = [p for values in self._series.values() for p in values]
        if not points or plot.width() < 10 or plot.height() < 10:
            painter.setPen(text_pen)
            painter.drawText(plot, Qt.AlignmentFlag.AlignCenter, "loss curves appear while training")
            painter.end()
            return
        x_min = min(p[0] for p in points)
        x_max = max(max(p[0] for p in points), x_min + 1)
        y_min = min(0.0, min(p[1] for p in points))
        y_max = max(max(p[1] for p in points), y_min + 1e-6)

        def to_screen(x: float, y: float) -> QPointF:
            return QPointF(plot.left() + (x - x_min) / (x_max - x_min) * plot.width(),
                           plot.bottom() - (y - y_min) / (y_max - y_min) * plot.height())

        painter.setPen(text_pen)
        small = painter.font()
        small.setPointSizeF(max(small.pointSizeF() - 1.5, 6.0))
        painter.setFont(small)
        for value, align in ((y_max, Qt.AlignmentFlag.AlignTop), (y_min, Qt.AlignmentFlag.AlignBottom)):
            label_box = QRectF(0, plot.top() - 2, MARGIN_LEFT - 4, plot.height() + 4)
            painter.drawText(label_box, align | Qt.AlignmentFlag.AlignRight, f"{value:.3g}")
        below = QRectF(plot.left(), plot.bottom() + 2, plot.width(), MARGIN_BOTTOM - 2)
        painter.drawText(below, Qt.AlignmentFlag.AlignLeft, str(x_min))
        painter.drawText(below, Qt.AlignmentFlag.AlignRight, f"iteration {x_max}")

        names = sorted(self._series, key=lambda n: (n != "total", n))
        legend_x = plot.left() + 6
        for index, name in enumerate(names):
            color = QColor(SERIES_COLORS[index % len(SERIES_COLORS)])
            screen = [to_screen(x, y) for x, y in self._series[name]]
            path = QPainterPath(screen[0])
            for point in screen[1:]:
                path.lineTo(point)
            painter.setPen(QPen(color, 2.2 if name == "total" else 1.0))
            painter.drawPath(path)
            label = f"{name} {self._series[name][-1][1]:.3f}"
            width = painter.fontMetrics().horizontalAdvance(label) + 16
            if legend_x + width <= plot.right():
                backing = self.palette().base().color()
                backing.setAlpha(210)
                painter.fillRect(QRectF(legend_x - 2, plot.top() + 2, width, 15), backing)
                painter.fillRect(QRectF(legend_x, plot.top() + 5, 8, 8), color)
                painter.setPen(text_pen)
                painter.drawText(QPointF(legend_x + 11, plot.top() + 13), label)
                legend_x += width
        painter.end()
