"""The editor wiring: toolbar -> canvas, undo/redo of masks and tags, accept suggestion or
pseudo-label, save verified masks (asking before replacing a file changed on disk), and what to do
with unsaved masks before leaving a folder or quitting.

Ctrl+Z undoes the mask edit, or the tag change when the Tags panel has the focus. On an image that is
not verified the document holds the corrections (``app.corrections`` saves each stroke); accepting
and Ctrl+S take what the user sees there, the suggestion with the corrections over it.
"""
from __future__ import annotations

import numpy as np
from PySide6.QtCore import QObject, Signal
from PySide6.QtWidgets import QApplication, QMessageBox

from app.canvas import Canvas
from app.edit_toolbar import EditToolbar
from app.image_view import ImageView
from app.messages import Messages
from app.project import Project
from app.style import resize_to
from app.tags_dock import TagsPanel
from oste_core.editing import ChangedOnDisk

Button = QMessageBox.StandardButton


class EditorControl(QObject):
    """Applies what the edit toolbar and the tags panel ask for to the current image's document."""

    maskChanged = Signal()  # the current document changed (edit, undo, redo, accept)
    userSaved = Signal(str)  # stem whose verified mask the user saved (Ctrl+S / the Save button)
    # (maskChanged also follows each saved correction stroke: the corrections controller saves it)

    def __init__(self, project: Project, view: ImageView, canvas: Canvas, toolbar: EditToolbar,
                 tags_panel: TagsPanel, messages: Messages, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._project, self._view, self._canvas, self._toolbar = project, view, canvas, toolbar
        self._tags_panel, self._messages = tags_panel, messages
        toolbar.toolChanged.connect(canvas.set_tool)
        toolbar.radiusChanged.connect(canvas.set_brush_radius)
        toolbar.paintValueChanged.connect(canvas.set_paint_value)
        toolbar.toleranceChanged.connect(canvas.set_tolerance)
        toolbar.undoRequested.connect(self.undo)
        toolbar.redoRequested.connect(self.redo)
        toolbar.acceptPseudoRequested.connect(self.accept_pseudo_label)
        toolbar.acceptSuggestionRequested.connect(self.accept_suggestion)
        toolbar.saveRequested.connect(self.save_current)
        canvas.set_brush_radius(toolbar.radius())
        canvas.set_tolerance(toolbar.tolerance())
        canvas.set_tool(toolbar.tool())
        canvas.maskEdited.connect(self._on_mask_edited)
        view.documentShown.connect(self.update_history)
        group = tags_panel.undo_group
        group.canUndoChanged.connect(self.update_history)
        group.canRedoChanged.connect(self.update_history)
        QApplication.instance().focusChanged.connect(self._on_focus_changed)

    def _tags_focused(self) -> bool:
        return self._tags_panel.isAncestorOf(QApplication.focusWidget())

    def _on_focus_changed(self, _old: object, _new: object) -> None:
        self.update_history()

    def update_history(self, *_signal_args: object) -> None:
        """Enable undo/redo for what Ctrl+Z would act on now (tags when focused, else the mask)."""
        if self._tags_focused():
            group = self._tags_panel.undo_group
            self._toolbar.set_history(group.canUndo(), group.canRedo())
            return
        doc = self._canvas.document()
        self._toolbar.set_history(bool(doc and doc.can_undo), bool(doc and doc.can_redo))

    def _on_mask_edited(self) -> None:
        self.update_history()
        self._project.notify_edited(self._view.stem)
        self.maskChanged.emit()

    def undo(self) -> None:
        """Ctrl+Z: undo the tag change (Tags panel focused) or the mask edit."""
        self._step(back=True)

    def redo(self) -> None:
        """Ctrl+Shift+Z: redo the tag change (Tags panel focused) or the mask edit."""
        self._step(back=False)

    def _step(self, back: bool) -> None:
        """Undo (``back``) or redo the tag change when the Tags panel has the focus, else the mask edit."""
        if self._tags_focused():
            group = self._tags_panel.undo_group
            group.undo() if back else group.redo()
            return
        doc = self._canvas.document()
        if doc is not None and (doc.undo() if back else doc.redo()):
            self._canvas.refresh_mask()
            self._on_mask_edited()

    def _take(self, layer: str, title: str, or_background: bool = False) -> bool:
        """Replace the mask with the prediction's ``layer`` (with the corrections over it on a corrections
        document, which becomes a full mask) as one undoable step; without a prediction, background when
        ``or_background``, else False."""
        doc = self._canvas.document()
        prediction = self._project.prediction(self._view.stem)
        if doc is None or (prediction is None and not or_background):
            self._messages.report(f"no {title} for this image yet (train a model, or wait for inference)")
            return False
        labels = (np.zeros(doc.shape, np.uint8) if prediction is None
                  else resize_to(getattr(prediction, layer), doc.shape, nearest=True))
        if doc.set_all(doc.shown(labels), sparse=False):
            self._canvas.refresh_mask()
            self._on_mask_edited()
        return True

    def _accept(self, layer: str, title: str) -> None:
        if self._take(layer, title):
            self._messages.report(f"{self._view.stem}: {title} accepted (Ctrl+Z undoes it, Ctrl+S saves it)")

    def accept_pseudo_label(self) -> None:
        """Replace the mask with the current pseudo-label (undoable; unsure pixels stay 255)."""
        self._accept("pseudo_label", "pseudo-label")

    def accept_suggestion(self) -> None:
        """Replace the mask with the suggestion, a label for every pixel (undoable)."""
        self._accept("suggestion", "suggestion")

    def save_current(self) -> bool:
        """Save the current mask to ``verified/<stem>.png`` (asks before replacing a changed file); a
        corrections document saves the suggestion with its corrections (accepted as one undoable step; with
        no suggestion yet, the corrections over background)."""
        stem, doc = self._view.stem, self._canvas.document()
        if not stem or doc is None or (doc.sparse and not self._take("suggestion", "suggestion", or_background=True)):
            return False
        if not self.save(stem):
            return False
        self.userSaved.emit(stem)
        return True

    def save(self, stem: str) -> bool:
        """Save one image's document (its verified mask, or its corrections); False when the user kept the
        file on disk or writing failed."""
        project, messages = self._project, self._messages
        try:
            path = project.save_document(stem)
        except ChangedOnDisk as exc:
            answer = messages.ask("Mask changed on disk", f"{exc}\n\nOverwrite it with your edits?",
                                  Button.Yes | Button.No, Button.No)
            if answer != Button.Yes:
                return False
            path = project.save_document(stem, force=True)
        except (OSError, ValueError) as exc:
            messages.show_error("Save failed", f"{stem}: cannot save the mask ({exc})")
            return False
        messages.report(f"saved {path}" if path is not None
                        else f"{stem}: no correction left, its corrections file removed")
        return True

    def resolve_unsaved(self, doing: str) -> bool:
        """Ask what to do with unsaved masks; False when the user cancels."""
        project = self._project
        unsaved = project.unsaved_stems()
        if not unsaved:
            return True
        names = ", ".join(unsaved[:8]) + (" ..." if len(unsaved) > 8 else "")
        answer = self._messages.ask("Unsaved masks", f"{len(unsaved)} image(s) have unsaved edits ({names}).\n"
                                    f"Save them before {doing}?", Button.SaveAll | Button.Discard | Button.Cancel,
                                    Button.SaveAll)
        if answer == Button.SaveAll:
            return all(self.save(stem) for stem in unsaved)
        if answer == Button.Discard:
            for stem in unsaved:
                project.discard_document(stem)
            return True
        return False
