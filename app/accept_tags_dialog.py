"""Images > Accept suggested tags...: tag the images whose suggested tags are sure at a threshold.

An image is tagged with its classes at the threshold or above only if every other class is at
``1 - threshold`` or below (`oste_core.engine.tag_suggestions.accept`); the dialog counts, as the
threshold changes, how many images that tags and how many it leaves for review.
"""
from __future__ import annotations

from PySide6.QtWidgets import QComboBox, QDialog, QDialogButtonBox, QDoubleSpinBox, QFormLayout, QLabel, QWidget

from oste_core.engine.tag_suggestions import SuggestedTag, is_sure

SHOWN, ALL_UNTAGGED = "shown", "all"


class AcceptTagsDialog(QDialog):
    """Threshold and scope; ``suggestions`` per scope (rel -> suggested tags of untagged images)."""

    def __init__(self, suggestions: dict[str, dict[str, list[SuggestedTag]]], parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Accept suggested tags")
        self._suggestions = suggestions
        self.threshold = QDoubleSpinBox()
        self.threshold.setRange(0.5, 1.0)
        self.threshold.setSingleStep(0.05)
        self.threshold.setDecimals(2)
        self.threshold.setValue(0.9)
        self.threshold.setToolTip("Tag an image only if each class is at least this probable, or at most 1 - this")
        self.scope = QComboBox()
        self.scope.addItem("The images the list shows", SHOWN)
        self.scope.addItem("Every image not tagged yet", ALL_UNTAGGED)
        self.summary = QLabel()
        self.summary.setWordWrap(True)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        self.ok_button = buttons.button(QDialogButtonBox.StandardButton.Ok)
        layout = QFormLayout(self)
        layout.addRow("Threshold", self.threshold)
        layout.addRow("Images", self.scope)
        layout.addRow(self.summary)
        layout.addRow(buttons)
        self.threshold.valueChanged.connect(self._update)
        self.scope.currentIndexChanged.connect(self._update)
        self._update()

    def chosen(self) -> tuple[float, list[str]]:
        """The threshold and the rels of the chosen scope's untagged images with suggestions."""
        return self.threshold.value(), list(self._suggestions[self.scope.currentData()])

    def _update(self) -> None:
        threshold, rels = self.chosen()
        sure = sum(is_sure(self._suggestions[self.scope.currentData()][rel], threshold) for rel in rels)
        self.summary.setText(f"{sure} of {len(rels)} images not tagged yet would be tagged; "
                             f"{len(rels) - sure} left for review (a class between {1 - threshold:.2f} and "
                             f"{threshold:.2f}).")
        self.ok_button.setEnabled(sure > 0)
