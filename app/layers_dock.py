"""Layer controls: which layer is drawn over the image (keys 1-9), its class, colormap and opacity.

The suggestion (a full mask: every pixel background or one of the image's tags) is the default
layer, drawn with its per-pixel confidence as opacity, so an annotator sees what "Accept
suggestion" would give before pressing it. The corrections layer (9) shows the strokes of
``corrections/<stem>.png`` alone, in class colours.
"""
from __future__ import annotations

import numpy as np
from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QButtonGroup,
    QCheckBox,
    QComboBox,
    QFormLayout,
    QLabel,
    QProgressBar,
    QRadioButton,
    QSlider,
    QVBoxLayout,
    QWidget,
)

from app.style import COLORMAPS, class_color, corrections_rgba, heatmap_rgba, label_rgba, resize_to, swatch_icon
from oste_core.engine.predictor import Prediction

LAYERS: list[tuple[str, str]] = [
    ("image", "Image only"),
    ("suggestion", "Suggestion"),
    ("cam", "Original CAM"),
    ("merged_cam", "Merged CAM (LEM)"),
    ("enhanced_cam", "Enhanced CAM (MAF)"),
    ("pseudo_label", "Pseudo-label (FBE)"),
    ("seg", "Segmentation"),
    ("gt", "Ground truth"),
    ("corrections", "Corrections"),
]
LABEL_BACKGROUND_ALPHA = 150  # label layers darken the background so it is visible as such
CAM_LAYERS = frozenset({"cam", "merged_cam", "enhanced_cam"})
LABEL_LAYERS = frozenset({"pseudo_label", "seg"})
PREDICTION_LAYERS = CAM_LAYERS | LABEL_LAYERS | {"suggestion"}
DEFAULT_LAYER = "suggestion"
MIN_SUGGESTION_ALPHA = 0.35  # the least confident suggested pixels stay visible


def layer_rgba(layer: str, shape: tuple[int, int], prediction: Prediction | None, cam_class: int,
               colormap: str, gt: np.ndarray | None = None, corrections: np.ndarray | None = None) -> np.ndarray | None:
    """The overlay (H, W, 4) of ``layer`` at the image ``shape``; None when there is nothing to draw.

    CAM layers show class ``cam_class`` (1-based) as a heatmap; label layers use the palette with
    a darkened background (the edited mask, drawn above, keeps its background transparent); the
    suggestion's opacity follows its confidence; the corrections leave "no correction" clear.
    """
    if layer == "corrections" and corrections is not None:
        return corrections_rgba(corrections)
    if layer in CAM_LAYERS and prediction is not None:
        cams = getattr(prediction, layer)
        if not 1 <= cam_class <= cams.shape[0]:
            return None
        return heatmap_rgba(resize_to(cams[cam_class - 1], shape, nearest=False), colormap)
    if layer in LABEL_LAYERS and prediction is not None:
        return label_rgba(resize_to(getattr(prediction, layer), shape, nearest=True), LABEL_BACKGROUND_ALPHA)
    if layer == "suggestion" and prediction is not None:
        rgba = label_rgba(resize_to(prediction.suggestion, shape, nearest=True), LABEL_BACKGROUND_ALPHA)
        confidence = resize_to(prediction.suggestion_confidence.astype(np.float32), shape, nearest=False)
        weight = MIN_SUGGESTION_ALPHA + (1.0 - MIN_SUGGESTION_ALPHA) * np.clip(confidence, 0.0, 1.0)
        rgba[..., 3] = (rgba[..., 3] * weight).astype(np.uint8)
        return rgba
    if layer == "gt" and gt is not None:
        return label_rgba(gt, LABEL_BACKGROUND_ALPHA)
    return None


def layer_note(layer: str, prediction: Prediction | None, cam_class: int, class_names: list[str]) -> str:
    """A hint when the selected layer shows nothing informative ("" otherwise)."""
    title = dict(LAYERS)[layer]
    if prediction is None:
        return ""
    if layer in CAM_LAYERS:
        cams = getattr(prediction, layer)
        if 1 <= cam_class <= cams.shape[0] and not cams[cam_class - 1].any():
            name = class_names[cam_class - 1] if cam_class <= len(class_names) else str(cam_class)
            return f"The {title} of '{name}' is zero everywhere: the model does not see this class here (yet)."
    if layer in LABEL_LAYERS | {"suggestion"} and not getattr(prediction, layer).any():
        return f"The {title.lower()} is background everywhere."
    return ""


class LayersPanel(QWidget):
    """Radio list of the layers, CAM class and colormap, opacity, mask visibility, busy bar."""

    layerChanged = Signal(str)
    classChanged = Signal(int)  # 1-based class index shown by the CAM layers
    colormapChanged = Signal(str)
    opacityChanged = Signal(float)
    maskVisibleChanged = Signal(bool)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        self._group = QButtonGroup(self)
        self._buttons: dict[str, QRadioButton] = {}
        for number, (key, title) in enumerate(LAYERS, start=1):
            button = QRadioButton(f"{number}  {title}")
            button.setToolTip(f"Show the {title.lower()} (key {number})")
            self._group.addButton(button, number)
            self._buttons[key] = button
            layout.addWidget(button)
        self._buttons[DEFAULT_LAYER].setChecked(True)
        self._group.idToggled.connect(self._on_toggled)

        form = QFormLayout()
        form.setContentsMargins(0, 6, 0, 0)
        self._class_combo = QComboBox()
        self._class_combo.currentIndexChanged.connect(self._on_class)
        self._colormap = QComboBox()
        self._colormap.addItems(list(COLORMAPS))
        self._colormap.currentTextChanged.connect(self.colormapChanged)
        self._opacity = QSlider(Qt.Orientation.Horizontal)
        self._opacity.setRange(0, 100)
        self._opacity.setValue(55)
        self._opacity.valueChanged.connect(lambda v: self.opacityChanged.emit(v / 100.0))
        self._show_mask = QCheckBox("Show edited mask")
        self._show_mask.setChecked(True)
        self._show_mask.toggled.connect(self.maskVisibleChanged)
        form.addRow("CAM class", self._class_combo)
        form.addRow("Colormap", self._colormap)
        form.addRow("Opacity", self._opacity)
        layout.addLayout(form)
        layout.addWidget(self._show_mask)

        self._busy = QProgressBar()
        self._busy.setRange(0, 0)
        self._busy.setTextVisible(False)
        self._busy.setMaximumHeight(8)
        self._note = QLabel()
        self._note.setWordWrap(True)
        self._note.setStyleSheet("color: palette(mid); font-style: italic;")
        self._busy_label = QLabel()
        self._busy_label.setWordWrap(True)
        layout.addWidget(self._note)
        layout.addWidget(self._busy_label)
        layout.addWidget(self._busy)
        layout.addStretch(1)
        self.set_note("")
        self.set_busy(False)

    # ------------------------------------------------------------- state
    def layer(self) -> str:
        return LAYERS[self._group.checkedId() - 1][0]

    def set_layer(self, key: str) -> None:
        self._buttons[key].setChecked(True)

    def set_layer_number(self, number: int) -> None:
        """Select layer 1..9 (the number keys)."""
        if 1 <= number <= len(LAYERS) and self._buttons[LAYERS[number - 1][0]].isEnabled():
            self.set_layer(LAYERS[number - 1][0])

    def set_available(self, available: set[str]) -> None:
        """Enable the layers that can be shown for this image (others are greyed out)."""
        for key, button in self._buttons.items():
            button.setEnabled(key in available or key == "image")

    def set_classes(self, class_names: list[str], preferred: list[int]) -> None:
        """Classes for the CAM layers; select the first of ``preferred`` (the image's tags) if any."""
        current = self.cam_class()
        self._class_combo.blockSignals(True)
        self._class_combo.clear()
        for index, name in enumerate(class_names, start=1):
            self._class_combo.addItem(swatch_icon(class_color(index)), name, index)
        choice = current if current in preferred else (preferred[0] if preferred else current)
        position = self._class_combo.findData(choice)
        self._class_combo.setCurrentIndex(max(position, 0))
        self._class_combo.blockSignals(False)

    def cam_class(self) -> int:
        data = self._class_combo.currentData()
        return int(data) if data is not None else 1

    def set_cam_class(self, index: int) -> None:
        self._class_combo.setCurrentIndex(max(self._class_combo.findData(index), 0))

    def colormap(self) -> str:
        return self._colormap.currentText()

    def set_colormap(self, name: str) -> None:
        if name in COLORMAPS:
            self._colormap.setCurrentText(name)

    def opacity(self) -> float:
        return self._opacity.value() / 100.0

    def set_opacity(self, opacity: float) -> None:
        self._opacity.setValue(round(opacity * 100))

    def set_note(self, text: str) -> None:
        """A hint about the selected layer (e.g. an empty CAM); "" hides it."""
        self._note.setText(text)
        self._note.setVisible(bool(text))

    def note(self) -> str:
        return self._note.text()

    def set_busy(self, busy: bool, text: str = "") -> None:
        """Show the busy indicator while inference for this image runs."""
        self._busy.setVisible(busy)
        self._busy_label.setText(text)
        self._busy_label.setVisible(bool(text))

    def mask_visible(self) -> bool:
        return self._show_mask.isChecked()

    def is_busy(self) -> bool:
        return not self._busy.isHidden()

    def _on_toggled(self, number: int, checked: bool) -> None:
        if checked:
            self.layerChanged.emit(LAYERS[number - 1][0])

    def _on_class(self, _position: int) -> None:
        self.classChanged.emit(self.cam_class())
