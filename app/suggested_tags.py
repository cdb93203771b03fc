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
from typing import TYPE_CHECKING

from PySide6.QtCore import QObject

from app.accept_tags_dialog import ALL_UNTAGGED, SHOWN, AcceptTagsDialog
from app.imagenet_dialog import ImagenetDialog
from oste_core.data import FolderError
from oste_core.engine.tag_suggestions import (SUGGESTIONS_FILE, SuggestedTag, is_sure, load_suggestions,
                                              save_suggestions, suggested_names, uncertainty)

if TYPE_CHECKING:
    from app.main_window import MainWindow


class SuggestedTagsControl(QObject):
    """Keeps the loaded run's suggestions (rel -> tags) and applies the user's answers."""

    def __init__(self, window: MainWindow) -> None:
        super().__init__(window)
        self._window = window
        self.suggestions: dict[str, list[SuggestedTag]] = {}
        self._file: Path | None = None
        window.inference.loaded.connect(self.load)
        window.project.opened.connect(self.clear)
        window.project.entryChanged.connect(self._on_entry_changed)
        window.view.imageChanged.connect(self.show)
        panel = window.tags_panel
        panel.suggestionAccepted.connect(self.accept_current)
        panel.suggestionRejected.connect(self.reject_current)
        panel.imagenetRequested.connect(self.edit_imagenet)

    def clear(self) -> None:
        self.suggestions, self._file = {}, None
        self.show(self._window.current_stem())

    def load(self, run_dir: str) -> None:
        """Read the run's suggestions for the images not tagged yet."""
        project = self._window.project
        self._file = Path(run_dir) / SUGGESTIONS_FILE
        untagged = set(project.folder.untagged) if project.is_open() else set()
        self.suggestions = {rel: tags for rel, tags in load_suggestions(self._file).items() if rel in untagged}
        if self.suggestions:
            self._window.report(f"suggested tags for {len(self.suggestions)} images not tagged yet "
                                "(Images > Review suggested tags)")
        self.show(self._window.current_stem())

    def for_stem(self, stem: str) -> list[SuggestedTag] | None:
        project = self._window.project
        if not stem or not project.is_open() or project.is_tagged(stem):
            return None
        return self.suggestions.get(project.rel(stem))

    def show(self, stem: str) -> None:
        """Show ``stem``'s suggestion (if it is not tagged yet) in the Tags panel."""
        project = self._window.project
        tagged = not stem or not project.is_open() or project.is_tagged(stem)
        self._window.tags_panel.set_suggestions(self.for_stem(stem), tagged=tagged)

    def _on_entry_changed(self, stem: str) -> None:
        if stem == self._window.current_stem():
            self.show(stem)

    def accept_current(self) -> None:
        """Tag the shown image with its suggested classes (T)."""
        stem = self._window.current_stem()
        tags = self.for_stem(stem)
        if tags is None:
            return
        names = suggested_names(tags)
        self._apply({stem: names})
        self._window.report(f"{self._window.project.rel(stem)}: tagged {', '.join(names) or 'background only'}")

    def reject_current(self) -> None:
        """Drop the shown image's suggestion (R); it stays not tagged yet."""
        stem = self._window.current_stem()
        if self.for_stem(stem) is None:
            return
        del self.suggestions[self._window.project.rel(stem)]
        if self._file is not None and self._file.is_file():
            kept = {rel: t for rel, t in load_suggestions(self._file).items()
                    if rel in self.suggestions or rel not in self._window.project.folder.untagged}
            save_suggestions(self._file, kept)
        self.show(stem)

    def accept_many(self) -> AcceptTagsDialog | None:
        """*Images > Accept suggested tags...*: the dialog, then the sure images tagged."""
        w = self._window
        if not self.suggestions:
            w.show_error("Accept suggested tags", "No suggested tags: train a model on a folder with images not "
                         "tagged yet (each training suggests their tags).")
            return None
        project = w.project
        shown = {rel: self.suggestions[rel] for rel in (project.rel(s) for s in w.image_list.visible_stems())
                 if rel in self.suggestions}
        dialog = AcceptTagsDialog({SHOWN: shown, ALL_UNTAGGED: dict(self.suggestions)}, w)
        dialog.accepted.connect(lambda: self._accept_from(dialog))
        dialog.open()
        return dialog

    def _accept_from(self, dialog: AcceptTagsDialog) -> None:
        threshold, rels = dialog.chosen()
        project = self._window.project
        stems = {project.folder.stem_of(rel): rel for rel in rels if is_sure(self.suggestions[rel], threshold)}
        self._apply({stem: suggested_names(self.suggestions[rel], threshold) for stem, rel in stems.items()})
        self._window.report(f"accepted the suggested tags of {len(stems)} images at {threshold:.2f}; "
                            f"{len(rels) - len(stems)} left for review")

    def _apply(self, tags: dict[str, list[str]]) -> None:
        project = self._window.project
        for stem in tags:
            self.suggestions.pop(project.rel(stem), None)
        project.set_many_tags(tags)
        stem = self._window.current_stem()
        if stem in tags:
            self._window.tags_panel.set_image(stem, project.tags(stem), project.entry(stem).display_name)

    def review(self) -> None:
        """List the untagged images with a suggestion, most uncertain first, and show only them."""
        w = self._window
        project = w.project
        scores = {project.folder.stem_of(rel): uncertainty(tags) for rel, tags in self.suggestions.items()}
        w.image_list.show_not_tagged_first(sorted(scores, key=lambda stem: (-scores[stem], stem)))

    def edit_imagenet(self, name: str) -> None:
        """The ImageNet classes of class ``name`` (priors.yaml)."""
        w = self._window
        if not w.project.is_open():
            return
        try:
            dialog = ImagenetDialog(w.project.root, w.project.class_names, name, w)
        except FolderError as exc:
            w.show_error("ImageNet classes", str(exc))
            return
        dialog.accepted.connect(lambda: w.report(f"{name}: {len(dialog.ticked())} ImageNet classes saved to "
                                                 "priors.yaml (used from the next training)"))
        dialog.open()
