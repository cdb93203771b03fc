"""The main window's actions, menus (File, Edit, View, Image, Training, Help) and file toolbar.

Every action is added to the window so its shortcut works wherever the focus is; the Help menu's
shortcut sheet lists them (`shortcut_actions`).
"""
from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from PySide6.QtGui import QAction, QKeySequence

from app.help_dialog import LEGEND_TAB, SHORTCUTS_TAB
from app.layers_dock import LAYERS
from app.style import icon

if TYPE_CHECKING:
    from app.main_window import MainWindow


class Menus:
    """Builds and holds the window's actions."""

    def __init__(self, window: MainWindow) -> None:
        self._window = window
        w = window
        self.open_action = self._action("&Open folder...", w.choose_folder, QKeySequence.StandardKey.Open,
                                        "fa5s.folder-open")
        self.demo_action = self._action("Open &demo project", w.open_demo, None, "fa5s.flask")
        self.export_action = self._action("&Export masks...", w.show_export_dialog, "Ctrl+E", "fa5s.file-export")
        self.quit_action = self._action("&Quit", w.close, "Ctrl+Q")
        self.prev_action = self._action("&Previous image", lambda: w.image_list.step(-1), "A", "fa5s.arrow-left")
        self.next_action = self._action("&Next image", lambda: w.image_list.step(+1), "D", "fa5s.arrow-right")
        self.fit_action = self._action("&Fit to window", w.canvas.fit, "Ctrl+F", "fa5s.expand")
        self.actual_action = self._action("&Actual size (1:1)", w.canvas.actual_size, "Ctrl+0", "fa5s.compress")
        self.zoom_in_action = self._action("Zoom &in", lambda: w.canvas.zoom_by(1.25), QKeySequence.StandardKey.ZoomIn,
                                           "fa5s.search-plus")
        self.zoom_out_action = self._action("Zoom &out", lambda: w.canvas.zoom_by(0.8),
                                            QKeySequence.StandardKey.ZoomOut, "fa5s.search-minus")
        self.layer_actions = [
            self._action(f"Layer {number}: {title}", lambda _=False, n=number: w.layers_panel.set_layer_number(n),
                         str(number))
            for number, (_key, title) in enumerate(LAYERS, start=1)]
        tags = w.suggested_tags
        self.accept_tags_action = self._action("Accept suggested &tags of this image", tags.accept_current, "T",
                                               "fa5s.check")
        self.reject_tags_action = self._action("&Reject suggested tags of this image", tags.reject_current, "R")
        self.accept_many_action = self._action("Accept suggested tags...", tags.accept_many, None, "fa5s.check-double")
        self.review_tags_action = self._action("Review suggested tags (uncertain first)", tags.review)
        self.update_action = self._action("&Update the run from verified masks", w.training.request_update, None,
                                          "fa5s.sync-alt")
        self.shortcuts_action = self._action("&Keyboard shortcuts", lambda: w.show_help(SHORTCUTS_TAB), "F1",
                                             "fa5s.keyboard")
        self.legend_action = self._action("&Layer legend", lambda: w.show_help(LEGEND_TAB), None, "fa5s.layer-group")
        group = w.tags_panel.undo_group
        self.undo_tags_action = group.createUndoAction(w, "Undo tag change")
        self.redo_tags_action = group.createRedoAction(w, "Redo tag change")
        self._build_menus()
        self._build_toolbar()

    def _action(self, title: str, slot: Callable[[], object], shortcut: str | QKeySequence.StandardKey | None = None,
                icon_name: str | None = None) -> QAction:
        action = QAction(title, self._window)
        if icon_name:
            action.setIcon(icon(icon_name))
        if shortcut is not None:
            action.setShortcut(QKeySequence(shortcut))
        action.triggered.connect(slot)
        self._window.addAction(action)
        return action

    def _build_menus(self) -> None:
        w = self._window
        bar = w.menuBar()
        file_menu = bar.addMenu("&File")
        file_menu.addActions([self.open_action, self.demo_action, self.export_action])
        file_menu.addSeparator()
        file_menu.addAction(self.quit_action)
        toolbar = w.edit_toolbar
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
        view_menu.addActions([dock.toggleViewAction() for dock in (w.list_dock, w.tags_dock, w.layers_dock,
                                                                    w.training_dock)])
        image_menu = bar.addMenu("&Image")
        image_menu.addActions([self.prev_action, self.next_action])
        image_menu.addSeparator()
        image_menu.addActions([self.accept_tags_action, self.reject_tags_action, self.accept_many_action,
                               self.review_tags_action])
        training_menu = bar.addMenu("&Training")
        training_menu.addAction(self.update_action)
        help_menu = bar.addMenu("&Help")
        help_menu.addActions([self.shortcuts_action, self.legend_action])

    def _build_toolbar(self) -> None:
        w = self._window
        file_toolbar = w.addToolBar("File")
        file_toolbar.setObjectName("file_toolbar")
        for action in (self.open_action, self.export_action, None, self.prev_action, self.next_action, None,
                       self.zoom_in_action, self.zoom_out_action, self.fit_action, self.actual_action):
            if action is None:
                file_toolbar.addSeparator()
            else:
                file_toolbar.addAction(action)
        w.insertToolBar(w.edit_toolbar, file_toolbar)

    def shortcut_actions(self) -> list[QAction]:
        """The window's and the edit toolbar's actions, for the shortcut sheet."""
        return [*self._window.actions(), *self._window.edit_toolbar.actions()]
