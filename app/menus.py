"""The window's actions, menus (File, Edit, View, Image, Training, Help) and file toolbar, and the Help dialog.

Every action is added to ``parent`` (the window) so its shortcut works wherever the focus is; the Help menu's
shortcut sheet lists them (`shortcut_actions`). The window installs `menu_bar` and `file_toolbar`.
"""
from __future__ import annotations

from collections.abc import Callable

from PySide6.QtGui import QAction, QKeySequence, QUndoGroup
from PySide6.QtWidgets import QMenuBar, QToolBar, QWidget

from app.canvas import Canvas
from app.edit_toolbar import EditToolbar
from app.folder_control import FolderControl
from app.help_dialog import LEGEND_TAB, SHORTCUTS_TAB, HelpDialog
from app.image_list import ImageList
from app.layers_dock import LAYERS, LayersPanel
from app.project import Project
from app.style import icon
from app.suggested_tags import SuggestedTagsControl
from app.training_control import TrainingControl


class Menus:
    """Builds and holds the window's actions; ``dock_actions`` show and hide the docks (View menu)."""

    def __init__(self, *, project: Project, folders: FolderControl, training: TrainingControl,
                 suggested_tags: SuggestedTagsControl, image_list: ImageList, canvas: Canvas,
                 layers_panel: LayersPanel, edit_toolbar: EditToolbar, tags_undo: QUndoGroup,
                 dock_actions: list[QAction], quit_app: Callable[[], object], parent: QWidget) -> None:
        self._project, self._edit_toolbar, self._parent = project, edit_toolbar, parent
        self._actions: list[QAction] = []
        self.help_dialog: HelpDialog | None = None
        self.open_action = self._action("&Open folder...", folders.choose_folder, QKeySequence.StandardKey.Open,
                                        "fa5s.folder-open")
        self.demo_action = self._action("Open &demo project", folders.open_demo, None, "fa5s.flask")
        self.export_action = self._action("&Export masks...", folders.show_export_dialog, "Ctrl+E",
                                          "fa5s.file-export")
        self.quit_action = self._action("&Quit", quit_app, "Ctrl+Q")
        self.prev_action = self._action("&Previous image", lambda: image_list.step(-1), "A", "fa5s.arrow-left")
        self.next_action = self._action("&Next image", lambda: image_list.step(+1), "D", "fa5s.arrow-right")
        self.fit_action = self._action("&Fit to window", canvas.fit, "Ctrl+F", "fa5s.expand")
        self.actual_action = self._action("&Actual size (1:1)", canvas.actual_size, "Ctrl+0", "fa5s.compress")
        self.zoom_in_action = self._action("Zoom &in", lambda: canvas.zoom_by(1.25), QKeySequence.StandardKey.ZoomIn,
                                           "fa5s.search-plus")
        self.zoom_out_action = self._action("Zoom &out", lambda: canvas.zoom_by(0.8),
                                            QKeySequence.StandardKey.ZoomOut, "fa5s.search-minus")
        self.layer_actions = [
            self._action(f"Layer {number}: {title}", lambda _=False, n=number: layers_panel.set_layer_number(n),
                         str(number))
            for number, (_key, title) in enumerate(LAYERS, start=1)]
        tags = suggested_tags
        self.accept_tags_action = self._action("Accept suggested &tags of this image", tags.accept_current, "T",
                                               "fa5s.check")
        self.reject_tags_action = self._action("&Reject suggested tags of this image", tags.reject_current, "R")
        self.accept_many_action = self._action("Accept suggested tags...", tags.accept_many, None, "fa5s.check-double")
        self.review_tags_action = self._action("Review suggested tags (uncertain first)", tags.review)
        self.update_action = self._action("&Update the run from verified masks", training.request_update, None,
                                          "fa5s.sync-alt")
        self.shortcuts_action = self._action("&Keyboard shortcuts", lambda: self.show_help(SHORTCUTS_TAB), "F1",
                                             "fa5s.keyboard")
        self.legend_action = self._action("&Layer legend", lambda: self.show_help(LEGEND_TAB), None,
                                          "fa5s.layer-group")
        self.undo_tags_action = tags_undo.createUndoAction(parent, "Undo tag change")
        self.redo_tags_action = tags_undo.createRedoAction(parent, "Redo tag change")
        self.menu_bar = self._build_menus(dock_actions)
        self.file_toolbar = self._build_toolbar()

    def _action(self, title: str, slot: Callable[[], object], shortcut: str | QKeySequence.StandardKey | None = None,
                icon_name: str | None = None) -> QAction:
        action = QAction(title, self._parent)
        if icon_name:
            action.setIcon(icon(icon_name))
        if shortcut is not None:
            action.setShortcut(QKeySequence(shortcut))
        action.triggered.connect(slot)
        self._parent.addAction(action)
        self._actions.append(action)
        return action

    def _build_menus(self, dock_actions: list[QAction]) -> QMenuBar:
        bar = QMenuBar(self._parent)
        file_menu = bar.addMenu("&File")
        file_menu.addActions([self.open_action, self.demo_action, self.export_action])
        file_menu.addSeparator()
        file_menu.addAction(self.quit_action)
        toolbar = self._edit_toolbar
        edit_menu = bar.addMenu("&Edit")
        edit_menu.addActions([toolbar.undo_action, toolbar.redo_action, toolbar.accept_suggestion_action,
                              toolbar.accept_action, toolbar.save_action])
        edit_menu.addSeparator()
        edit_menu.addActions([self.undo_tags_action, self.redo_tags_action])
        view_menu = bar.addMenu("&View")
        view_menu.addActions([self.fit_action, self.actual_action, self.zoom_in_action, self.zoom_out_action])
        view_menu.addSeparator()
        view_menu.addActions(self.layer_actions)
        view_menu.addSeparator()
        view_menu.addActions(dock_actions)
        image_menu = bar.addMenu("&Image")
        image_menu.addActions([self.prev_action, self.next_action])
        image_menu.addSeparator()
        image_menu.addActions([self.accept_tags_action, self.reject_tags_action, self.accept_many_action,
                               self.review_tags_action])
        training_menu = bar.addMenu("&Training")
        training_menu.addAction(self.update_action)
        help_menu = bar.addMenu("&Help")
        help_menu.addActions([self.shortcuts_action, self.legend_action])
        return bar

    def _build_toolbar(self) -> QToolBar:
        file_toolbar = QToolBar("File", self._parent)
        file_toolbar.setObjectName("file_toolbar")
        for action in (self.open_action, self.export_action, None, self.prev_action, self.next_action, None,
                       self.zoom_in_action, self.zoom_out_action, self.fit_action, self.actual_action):
            if action is None:
                file_toolbar.addSeparator()
            else:
                file_toolbar.addAction(action)
        return file_toolbar

    def shortcut_actions(self) -> list[QAction]:
        """The window's and the edit toolbar's actions, for the shortcut sheet."""
        return [*self._actions, *self._edit_toolbar.actions()]

    def show_help(self, tab: int) -> HelpDialog:
        """Open the shortcut sheet or the layer legend (Help menu)."""
        if self.help_dialog is None:
            self.help_dialog = HelpDialog(self.shortcut_actions(), self._project.class_names, self._parent)
        self.help_dialog.set_classes(self._project.class_names)
        self.help_dialog.show_tab(tab)
        return self.help_dialog
