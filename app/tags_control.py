"""The open project's images and classes in the image list, the Tags panel and the class pickers (the edit
toolbar's and the Layers panel's), and the user's tag edits and new classes saved to ``tags.csv`` /
``classes.txt`` (asking when another program changed them, `app.folder_conflicts`)."""
from __future__ import annotations

from PySide6.QtCore import QObject

from app.edit_toolbar import EditToolbar
from app.folder_conflicts import FolderConflicts
from app.image_list import ImageList
from app.image_view import ImageView
from app.layers_dock import LayersPanel
from app.messages import Messages
from app.project import Project, TagsChangedOnDisk
from app.tags_dock import TagsPanel
from oste_core.labels import BACKGROUND


class TagsControl(QObject):
    """Keeps the lists of images, tags and classes in step with the project."""

    def __init__(self, project: Project, view: ImageView, conflicts: FolderConflicts, tags_panel: TagsPanel,
                 image_list: ImageList, edit_toolbar: EditToolbar, layers_panel: LayersPanel, messages: Messages,
                 parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._project, self._view, self._conflicts, self._panel = project, view, conflicts, tags_panel
        self._image_list, self._toolbar, self._layers_panel = image_list, edit_toolbar, layers_panel
        self._messages = messages
        project.opened.connect(tags_panel.clear_history)
        project.entryChanged.connect(lambda stem: image_list.update_entry(project.entry(stem)))
        view.imageChanged.connect(self._on_image_changed)
        tags_panel.tagsEdited.connect(self._on_tags_edited)
        tags_panel.classAdded.connect(self._on_class_added)
        conflicts.tagsReloaded.connect(self.show_project_contents)

    def show_project_contents(self) -> None:
        """List the project's images and classes again (opened, or its tags reloaded); the current image stays."""
        project, stem = self._project, self._view.stem
        self._image_list.set_entries([project.entry(s) for s in project.stems()], project.class_names)
        self._on_classes_changed()
        if stem in project.stems():
            self._image_list.select_stem(stem)

    def _on_classes_changed(self) -> None:
        names = self._project.class_names
        self._panel.set_classes(names)
        self._image_list.set_class_names(names)
        if self._view.stem:
            self._show_tags(self._view.stem)
        self._update_class_pickers()

    def _show_tags(self, stem: str) -> None:
        project = self._project
        self._panel.set_image(stem or None, project.tags(stem) if stem else [],
                              project.entry(stem).display_name if stem else "")

    def _on_image_changed(self, stem: str) -> None:
        self._show_tags(stem)
        if stem:
            self._update_class_pickers()

    def _update_class_pickers(self) -> None:
        stem = self._view.stem
        tags = self._project.tag_indices(stem) if stem else []
        names = self._project.class_names
        self._toolbar.set_classes([(BACKGROUND, "background")] + [(i, names[i - 1]) for i in tags])
        self._layers_panel.set_classes(names, tags)

    def _on_tags_edited(self, tags: list[str]) -> None:
        stem = self._view.stem
        try:
            self._project.set_tags(stem, tags)
        except TagsChangedOnDisk:
            self._conflicts.tags_changed(lambda: self._on_tags_edited(tags))
            return
        except (OSError, ValueError, KeyError) as exc:
            self._messages.show_error("Tags not saved", f"{self._project.root / 'tags.csv'}: {exc}")
            self._show_tags(stem)  # the ticks the file has
            return
        self._messages.report(f"{stem}: tags {', '.join(tags) or '(none)'} saved to tags.csv")
        self._update_class_pickers()
        self._view.refresh_layer()
        self._view.request_prediction()

    def _on_class_added(self, name: str) -> None:
        try:
            index = self._project.add_class(name)
        except TagsChangedOnDisk:
            self._conflicts.tags_changed(lambda: self._on_class_added(name))
            return
        except (OSError, ValueError) as exc:
            self._messages.show_error("Class not added", str(exc))
            return
        self._on_classes_changed()
        self._messages.report(f"class {index} '{name}' added to classes.txt")
