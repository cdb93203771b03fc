"""Suggested tags in the GUI: the loaded run's ``suggested_tags.csv`` shown for images not tagged yet.

A training writes the suggestions of the folder's untagged images into its run folder
(`oste_core.engine.tag_suggestions`); loading a run reads them. The Tags panel shows the shown image's
suggestion; T accepts it (the image is tagged with the suggested classes), R rejects it (it stays not tagged
yet and the suggestion is dropped from the run's file). *Images > Accept suggested tags...* tags the sure
ones over the shown images or all of them, and *Review suggested tags* lists the untagged images with the
most uncertain suggestion first. The Tags panel's "ImageNet..." opens `ImagenetDialog`.
"""
from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QObject
from PySide6.QtWidgets import QWidget

from app.accept_tags_dialog import ALL_UNTAGGED, SHOWN, AcceptTagsDialog
from app.image_list import ImageList
from app.image_view import ImageView
from app.imagenet_dialog import ImagenetDialog
from app.messages import Messages
from app.project import Project
from app.tags_dock import TagsPanel
from app.workers import InferenceClient
from oste_core.data import FolderError
from oste_core.engine.tag_suggestions import (SUGGESTIONS_FILE, SuggestedTag, is_sure, load_suggestions,
                                              save_suggestions, suggested_names, uncertainty)


class SuggestedTagsControl(QObject):
    """Keeps the loaded run's suggestions (rel -> tags) and applies the user's answers."""

    def __init__(self, project: Project, inference: InferenceClient, view: ImageView, tags_panel: TagsPanel,
                 image_list: ImageList, messages: Messages, parent: QWidget) -> None:
        super().__init__(parent)
        self._project, self._view, self._panel, self._image_list = project, view, tags_panel, image_list
        self._messages, self._parent = messages, parent  # the dialogs open over ``parent``
        self.suggestions: dict[str, list[SuggestedTag]] = {}
        self._file: Path | None = None
        inference.loaded.connect(self.load)
        project.opened.connect(self.clear)
        project.entryChanged.connect(self._on_entry_changed)
        view.imageChanged.connect(self.show)
        tags_panel.suggestionAccepted.connect(self.accept_current)
        tags_panel.suggestionRejected.connect(self.reject_current)
        tags_panel.imagenetRequested.connect(self.edit_imagenet)

    def clear(self) -> None:
        """Forget the suggestions (another folder was opened)."""
        self.suggestions, self._file = {}, None
        self.show(self._view.stem)

    def load(self, run_dir: str) -> None:
        """Read the run's suggestions for the images not tagged yet."""
        project = self._project
        self._file = Path(run_dir) / SUGGESTIONS_FILE
        untagged = set(project.folder.untagged) if project.is_open() else set()
        self.suggestions = {rel: tags for rel, tags in load_suggestions(self._file).items() if rel in untagged}
        if self.suggestions:
            self._messages.report(f"suggested tags for {len(self.suggestions)} images not tagged yet "
                                  "(Images > Review suggested tags)")
        self.show(self._view.stem)

    def for_stem(self, stem: str) -> list[SuggestedTag] | None:
        """``stem``'s suggested tags, None when it is tagged or has no suggestion."""
        project = self._project
        if not stem or not project.is_open() or project.is_tagged(stem):
            return None
        return self.suggestions.get(project.rel(stem))

    def show(self, stem: str) -> None:
        """Show ``stem``'s suggestion (if it is not tagged yet) in the Tags panel."""
        project = self._project
        tagged = not stem or not project.is_open() or project.is_tagged(stem)
        self._panel.set_suggestions(self.for_stem(stem), tagged=tagged)

    def _on_entry_changed(self, stem: str) -> None:
        if stem == self._view.stem:
            self.show(stem)

    def accept_current(self) -> None:
        """Tag the shown image with its suggested classes (T)."""
        stem = self._view.stem
        tags = self.for_stem(stem)
        if tags is None:
            return
        names = suggested_names(tags)
        self._apply({stem: names})
        self._messages.report(f"{self._project.rel(stem)}: tagged {', '.join(names) or 'background only'}")

    def reject_current(self) -> None:
        """Drop the shown image's suggestion (R); it stays not tagged yet."""
        stem = self._view.stem
        if self.for_stem(stem) is None:
            return
        del self.suggestions[self._project.rel(stem)]
        if self._file is not None and self._file.is_file():
            kept = {rel: t for rel, t in load_suggestions(self._file).items()
                    if rel in self.suggestions or rel not in self._project.folder.untagged}
            save_suggestions(self._file, kept)
        self.show(stem)

    def accept_many(self) -> AcceptTagsDialog | None:
        """*Images > Accept suggested tags...*: the dialog, then the sure images tagged."""
        if not self.suggestions:
            self._messages.show_error("Accept suggested tags", "No suggested tags: train a model on a folder with "
                                      "images not tagged yet (each training suggests their tags).")
            return None
        project = self._project
        shown = {rel: self.suggestions[rel] for rel in (project.rel(s) for s in self._image_list.visible_stems())
                 if rel in self.suggestions}
        dialog = AcceptTagsDialog({SHOWN: shown, ALL_UNTAGGED: dict(self.suggestions)}, self._parent)
        dialog.accepted.connect(lambda: self._accept_from(dialog))
        dialog.open()
        return dialog

    def _accept_from(self, dialog: AcceptTagsDialog) -> None:
        threshold, rels = dialog.chosen()
        project = self._project
        stems = {project.folder.stem_of(rel): rel for rel in rels if is_sure(self.suggestions[rel], threshold)}
        self._apply({stem: suggested_names(self.suggestions[rel], threshold) for stem, rel in stems.items()})
        self._messages.report(f"accepted the suggested tags of {len(stems)} images at {threshold:.2f}; "
                              f"{len(rels) - len(stems)} left for review")

    def _apply(self, tags: dict[str, list[str]]) -> None:
        project = self._project
        for stem in tags:
            self.suggestions.pop(project.rel(stem), None)
        project.set_many_tags(tags)
        stem = self._view.stem
        if stem in tags:
            self._panel.set_image(stem, project.tags(stem), project.entry(stem).display_name)

    def review(self) -> None:
        """List the untagged images with a suggestion, most uncertain first, and show only them."""
        project = self._project
        scores = {project.folder.stem_of(rel): uncertainty(tags) for rel, tags in self.suggestions.items()}
        self._image_list.show_not_tagged_first(sorted(scores, key=lambda stem: (-scores[stem], stem)))

    def edit_imagenet(self, name: str) -> None:
        """The ImageNet classes of class ``name`` (priors.yaml)."""
        project, messages = self._project, self._messages
        if not project.is_open():
            return
        try:
            dialog = ImagenetDialog(project.root, project.class_names, name, self._parent)
        except FolderError as exc:
            messages.show_error("ImageNet classes", str(exc))
            return
        dialog.accepted.connect(lambda: messages.report(f"{name}: {len(dialog.ticked())} ImageNet classes saved "
                                                        "to priors.yaml (used from the next training)"))
        dialog.open()
