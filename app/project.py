"""The open project as a Qt model: the core `LabelledFolder` plus what the GUI keeps per image
(edit documents, cached predictions, uncertainty scores, read errors) and the run folders.

Images that have no row in ``tags.csv`` yet (``LabelledFolder.untagged``) are listed too; giving
them tags makes them samples. Every tag change is written to ``tags.csv`` at once.

While a project is open its folder is locked (``.oste.lock``, `oste_core.utils.locks`): a second session
gets `FolderLockedError` and may open it read-only (every write then raises `ReadOnlyError`). Before each
write of ``tags.csv`` / ``classes.txt`` the files are compared with what was read: a change made by another
program raises `TagsChangedOnDisk`, and `app.folder_conflicts` asks whether to reload them or keep its own tags.
"""
from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

from PySide6.QtCore import QObject, QStandardPaths, Signal

from oste_core.data import LabelledFolder, Sample, detect_layout, open_folder, write_demo_data
from oste_core.data.folder import CORRECTIONS_DIR, VERIFIED_DIR
from oste_core.editing import MaskDocument, open_document, verified_path
from oste_core.engine.predictor import Prediction
from oste_core.engine.run_folder import RunFolder
from oste_core.utils.io import file_signature, remove_stale_temp_files
from oste_core.utils.locks import FolderLock

RUNS_DIR = "runs"
DEMO_IMAGES, DEMO_SIZE = 200, 128
PREDICTION_CACHE = 24


class ReadOnlyError(PermissionError):
    """The project was opened read-only (another session writes it); nothing is saved."""


class TagsChangedOnDisk(RuntimeError):
    """``tags.csv`` or ``classes.txt`` changed on disk since the project read or wrote them."""


@dataclass
class ListEntry:
    """What the image list shows about one image."""

    stem: str
    status: str  # "unlabelled" | "pseudo" | "verified" | "error"
    tags: list[str] = field(default_factory=list)
    tagged: bool = True  # False: no row in tags.csv yet (not used for training)
    uncertainty: float | None = None
    unsaved: bool = False
    message: str = ""  # the read error for status "error"
    rel: str = ""  # path relative to the folder ('/' separators); "" when unknown

    @property
    def display_name(self) -> str:
        """The file name the list shows (the stem when the path is unknown)."""
        return self.rel.rpartition("/")[2] if self.rel else self.stem


class Project(QObject):
    """Wraps the `LabelledFolder` of the open folder; emits when an image's list entry changes."""

    opened = Signal()
    classesChanged = Signal()
    entryChanged = Signal(str)  # stem

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.folder: LabelledFolder | None = None
        self._samples: dict[str, Sample] = {}  # stem -> sample (index of folder.samples)
        self._untagged: dict[str, str] = {}  # stem -> rel of images without tags
        self._documents: dict[str, MaskDocument] = {}
        self._predictions: OrderedDict[str, Prediction] = OrderedDict()
        self._predicted: set[str] = set()
        self._uncertainty: dict[str, float] = {}
        self._errors: dict[str, str] = {}
        self._lock: FolderLock | None = None
        self.read_only = False
        self._tags_seen: tuple = ()  # signatures of tags.csv and classes.txt as last read or written

    # -------------------------------------------------------------- folder
    @property
    def root(self) -> Path:
        if self.folder is None:
            raise RuntimeError("no project is open")
        return self.folder.root

    def is_open(self) -> bool:
        return self.folder is not None

    def open(self, root: str | Path, read_only: bool = False) -> None:
        """Lock and read the folder (any supported layout) and write the native files when absent.

        Raises `oste_core.data.FolderError` with a clear message for unusable folders, and
        `FolderLockedError` when another session holds the folder (unless ``read_only``).
        """
        root = Path(root).expanduser().resolve()
        detect_layout(root)  # a missing folder is a FolderError before anything is locked
        keep = self._lock is not None and self._lock.folder == root and not read_only
        lock = self._lock if keep else (None if read_only else FolderLock(root, "OSTE Studio").acquire())
        try:
            folder = open_folder(root)
            if not read_only:
                # left by a killed session
                remove_stale_temp_files(root, folder.root / VERIFIED_DIR, folder.root / CORRECTIONS_DIR)
                if not folder.tags_path.is_file() or not folder.classes_path.is_file():
                    folder.save_tags()
        except BaseException:
            if lock is not None and not keep:
                lock.release()
            raise
        if self._lock is not None and not keep:
            self._lock.release()
        self._lock, self.read_only = lock, read_only
        self._use(folder)
        self._documents.clear()
        self._errors.clear()
        self.opened.emit()

    def _use(self, folder: LabelledFolder) -> None:
        self.folder = folder
        self._samples = {s.stem: s for s in folder.samples}
        self._untagged = {folder.stem_of(rel): rel for rel in folder.untagged}
        self._tags_seen = self._tags_on_disk()
        self.clear_predictions()

    def close(self) -> None:
        """Release the folder's lock (the window is closing)."""
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def _tags_on_disk(self) -> tuple:
        return file_signature(self.folder.tags_path), file_signature(self.folder.classes_path)

    def tags_changed_on_disk(self) -> bool:
        """True when another program rewrote ``tags.csv`` or ``classes.txt`` since this project read them."""
        return self.folder is not None and self._tags_on_disk() != self._tags_seen

    def reload_tags(self) -> None:
        """Read the folder's tags and classes again (after another program changed them); edits are kept."""
        self._use(open_folder(self.root))

    def keep_own_tags(self) -> None:
        """Accept the change on disk as seen: the next write replaces it with this project's tags."""
        self._tags_seen = self._tags_on_disk()

    def _before_write(self, tags: bool = False) -> None:
        if self.read_only:
            raise ReadOnlyError(f"{self.root}: opened read-only (another session writes this folder); "
                                "nothing is saved")
        if tags and self.tags_changed_on_disk():
            raise TagsChangedOnDisk(f"{self.folder.tags_path}: changed on disk since OSTE Studio read it")

    def _save_tags(self) -> None:
        self.folder.save_tags()
        self._tags_seen = self._tags_on_disk()

    @property
    def class_names(self) -> list[str]:
        return list(self.folder.class_names) if self.folder else []

    @property
    def problems(self) -> list[str]:
        return list(self.folder.problems) if self.folder else []

    def stems(self) -> list[str]:
        """All listed images: tagged samples, then untagged images, each in folder order."""
        if self.folder is None:
            return []
        return [s.stem for s in self.folder.samples] + list(self._untagged)

    def sample(self, stem: str) -> Sample | None:
        return self._samples.get(stem)

    def rel(self, stem: str) -> str:
        """The image's path relative to the folder ('/' separators)."""
        sample = self.sample(stem)
        return sample.rel if sample is not None else self._untagged[stem]

    def image_path(self, stem: str) -> Path:
        sample = self.sample(stem)
        return sample.image_path if sample is not None else self.root / self._untagged[stem]

    def is_tagged(self, stem: str) -> bool:
        return self.sample(stem) is not None

    def tags(self, stem: str) -> list[str]:
        sample = self.sample(stem)
        return list(sample.tags) if sample is not None else []

    def tag_indices(self, stem: str) -> list[int]:
        sample = self.sample(stem)
        return self.folder.tag_indices(sample) if sample is not None else []

    def gt_path(self, stem: str) -> Path | None:
        sample = self.sample(stem)
        return sample.gt_mask if sample is not None else None

    def set_tags(self, stem: str, tags: list[str]) -> None:
        """Change one image's tags and save ``tags.csv`` atomically right away (see `_before_write`)."""
        self._before_write(tags=True)
        sample = self.folder.set_tags(self._untagged.get(stem, stem), tags)
        self._samples[stem] = sample
        self._untagged.pop(stem, None)
        self._save_tags()
        self.drop_prediction(stem)
        self.entryChanged.emit(stem)

    def set_many_tags(self, tags: dict[str, list[str]]) -> None:
        """Change several images' tags (accepted suggestions) and save ``tags.csv`` once."""
        for stem, names in tags.items():
            self._samples[stem] = self.folder.set_tags(self._untagged.pop(stem, stem), names)
            self.drop_prediction(stem)
        if tags:
            self.folder.save_tags()
        for stem in tags:
            self.entryChanged.emit(stem)

    def add_class(self, name: str) -> int:
        """Add a foreground class (saved to ``classes.txt``); returns its index. ValueError for a bad name."""
        self._before_write(tags=True)
        index = self.folder.add_class(name)
        self._save_tags()
        self.classesChanged.emit()
        return index

    # -------------------------------------------------------------- status
    def status(self, stem: str) -> str:
        if stem in self._errors:
            return "error"
        sample = self.sample(stem)
        if verified_path(self.root, stem).is_file() or (sample is not None and sample.verified_mask is not None):
            return "verified"
        if stem in self._predicted:
            return "pseudo"
        return "unlabelled"

    def entry(self, stem: str) -> ListEntry:
        doc = self._documents.get(stem)
        return ListEntry(stem, self.status(stem), self.tags(stem), self.is_tagged(stem),
                         self._uncertainty.get(stem), bool(doc and doc.dirty), self._errors.get(stem, ""),
                         self.rel(stem))

    def set_error(self, stem: str, message: str) -> None:
        """Mark an image as unreadable (error badge)."""
        self._errors[stem] = message
        self.entryChanged.emit(stem)

    def error(self, stem: str) -> str:
        return self._errors.get(stem, "")

    def stem_for_problem(self, problem: str) -> str | None:
        """The listed image a ``"path: reason"`` problem line is about (to badge it), if any."""
        return next((stem for stem in self.stems() if problem.startswith(f"{self.image_path(stem)}:")), None)

    # ----------------------------------------------------------- documents
    def document(self, stem: str) -> MaskDocument | None:
        return self._documents.get(stem)

    def open_document(self, stem: str, shape: tuple[int, int], start_empty: bool = False) -> MaskDocument:
        """The edit document of ``stem`` (kept in memory while it has unsaved edits).

        An image without a verified mask gets a corrections document (``oste_core.editing``). Raises
        `ImageLoadError` when the mask file on disk is unreadable; ``start_empty`` then gives a blank
        document (saving it asks before replacing the unreadable file).
        """
        doc = self._documents.get(stem)
        if doc is None or doc.shape != tuple(shape):
            sample = self.sample(stem)
            doc = open_document(self.root, stem, shape, sample.verified_mask if sample is not None else None,
                                start_empty=start_empty)
            self._documents[stem] = doc
        return doc

    def release_clean_documents(self, keep: str | None = None) -> None:
        """Drop documents without unsaved edits (except ``keep``) to free memory."""
        for stem in [s for s, d in self._documents.items() if not d.dirty and s != keep]:
            del self._documents[stem]

    def unsaved_stems(self) -> list[str]:
        return [stem for stem, doc in self._documents.items() if doc.dirty]

    def save_document(self, stem: str, force: bool = False) -> Path | None:
        """Write ``verified/<stem>.png`` (a corrections document: ``corrections/<stem>.png``, None when it
        was removed); raises `ChangedOnDisk` if the file changed on disk."""
        self._before_write()
        doc = self._documents[stem]
        path = doc.save(self.root, force=force)
        sample = self.sample(stem)
        if sample is not None and not doc.sparse:
            sample.verified_mask = path
        self.entryChanged.emit(stem)
        return path

    def discard_document(self, stem: str) -> None:
        self._documents.pop(stem, None)
        self.entryChanged.emit(stem)

    def notify_edited(self, stem: str) -> None:
        self.entryChanged.emit(stem)

    # --------------------------------------------------------- predictions
    def prediction(self, stem: str) -> Prediction | None:
        prediction = self._predictions.get(stem)
        if prediction is not None:
            self._predictions.move_to_end(stem)
        return prediction

    def set_prediction(self, stem: str, prediction: Prediction) -> None:
        """Cache a prediction (LRU) and mark the image as having a pseudo-label."""
        self._predictions[stem] = prediction
        self._predictions.move_to_end(stem)
        while len(self._predictions) > PREDICTION_CACHE:
            self._predictions.popitem(last=False)
        self._predicted.add(stem)
        self.entryChanged.emit(stem)

    def drop_prediction(self, stem: str) -> None:
        self._predictions.pop(stem, None)

    def clear_predictions(self) -> None:
        """Forget predictions and scores (a different run was selected)."""
        self._predictions.clear()
        self._predicted.clear()
        self._uncertainty.clear()

    def set_uncertainty(self, stem: str, score: float) -> None:
        self._uncertainty[stem] = score
        self._predicted.add(stem)
        self.entryChanged.emit(stem)

    # ----------------------------------------------------------------- runs
    @property
    def runs_dir(self) -> Path:
        return self.root / RUNS_DIR

    def runs(self) -> list[Path]:
        """Run folders that hold a model or a checkpoint, newest first."""
        if self.folder is None or not self.runs_dir.is_dir():
            return []
        found = [p for p in self.runs_dir.iterdir()
                 if p.is_dir() and RunFolder(p).has_weights()]
        return sorted(found, key=lambda p: p.name, reverse=True)

    def preferred_run(self, remembered: str | None = None) -> Path | None:
        """The run to load on opening: the remembered one if it finished, else the newest finished
        run (a ``model.pt``), so an aborted run is never picked over a usable one; else the
        remembered or newest stopped run."""
        runs = self.runs()
        finished = [run for run in runs if RunFolder(run).is_finished()]
        chosen = next((run for run in runs if run.name == remembered), None)
        if chosen is not None and (chosen in finished or not finished):
            return chosen
        return (finished or runs or [None])[0]

    def new_run_dir(self) -> Path:
        """A fresh ``runs/<timestamp>`` folder name (not created)."""
        base = time.strftime("%Y%m%d-%H%M%S")
        candidate, counter = self.runs_dir / base, 1
        while candidate.exists():
            counter += 1
            candidate = self.runs_dir / f"{base}-{counter}"
        return candidate


def demo_location() -> Path:
    """``<user data folder>/demo`` (QStandardPaths.AppDataLocation)."""
    return Path(QStandardPaths.writableLocation(QStandardPaths.StandardLocation.AppDataLocation)) / "demo"


def ensure_demo(path: Path, n: int = DEMO_IMAGES, size: int = DEMO_SIZE) -> Path:
    """Write the synthetic demo project at ``path`` once (the core writes it atomically)."""
    if path.is_dir() and any(path.iterdir()):
        return path
    return write_demo_data(path, n=n, size=size)
