"""Qt-free mask editing for the GUI editor: brush, eraser, fills (mask region, polygon, similar image
colour), unbounded undo/redo, verified saves and sparse corrections.

Conventions (the GUI follows them): class index 0 is background, 1..K the foreground classes,
255 ("unsure") marks pixels the user wants ignored. The eraser removes a label, i.e. it paints
background (0), as labelme users expect. Undo steps keep only the changed bounding box
(before/after patches), so a long editing session stays small in memory.
Verified masks live in ``<folder>/verified/<stem>.png`` as VOC-palette PNGs; a save never
overwrites a file that changed on disk since it was loaded (`VerifiedMaskConflict`).

An image without a verified mask opens as a *corrections* document (``sparse``): its mask is the
sparse corrections of ``corrections/<stem>.png`` (``oste_core.suggest.corrections``), 255 meaning "no
correction", so the same tools paint strokes over the suggestion instead of replacing it (the unsure
brush, 255, removes a correction). Saving writes the corrections file (`CorrectionsConflict` when it
changed on disk); `set_all` with ``sparse=False`` turns it into a full mask, as one undoable step.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import cv2
import numpy as np

from oste_core.data import load_mask
from oste_core.data.folder import VERIFIED_DIR
from oste_core.export import save_palette_png
from oste_core.labels import BACKGROUND, UNSURE
from oste_core.suggest.corrections import corrections_path, load_corrections, save_corrections

DEFAULT_TOLERANCE = 24  # per-channel colour distance of the similar-colour fill

Point = tuple[float, float]


class ChangedOnDisk(RuntimeError):
    """A mask file changed on disk since it was loaded; saving would silently drop that change."""


class VerifiedMaskConflict(ChangedOnDisk):
    """The verified mask on disk changed since it was loaded."""


class CorrectionsConflict(ChangedOnDisk):
    """The corrections file on disk changed since it was loaded."""


@dataclass
class _Patch:
    """One changed rectangle: pixels before and after an edit, top-left at (y0, x0)."""

    y0: int
    x0: int
    before: np.ndarray
    after: np.ndarray

    def apply(self, doc: MaskDocument, use_after: bool) -> None:
        values = self.after if use_after else self.before
        h, w = values.shape
        doc.mask[self.y0 : self.y0 + h, self.x0 : self.x0 + w] = values


@dataclass
class _KindChange:
    """A step that turned a corrections document into a full mask (or back)."""

    before: bool  # sparse before the step
    after: bool

    def apply(self, doc: MaskDocument, use_after: bool) -> None:
        doc.sparse = self.after if use_after else self.before


@dataclass
class MaskDocument:
    """An editable (H, W) uint8 mask of one image with per-image unbounded undo/redo.

    ``disk_mtime_ns`` is the modification time of ``verified/<stem>.png`` when it was loaded
    (``None``: no verified file existed), ``corrections_mtime_ns`` that of ``corrections/<stem>.png``;
    `save` uses them to detect changes made by someone else. ``sparse``: a corrections document (255 =
    no correction), saved to ``corrections/``. Edits between `begin_stroke` and `end_stroke` form one
    undo step (one brush drag).
    """

    mask: np.ndarray
    stem: str
    disk_mtime_ns: int | None = None
    dirty: bool = False
    sparse: bool = False
    corrections_mtime_ns: int | None = None
    _undo: list[list[_Patch | _KindChange]] = field(default_factory=list, repr=False)
    _redo: list[list[_Patch | _KindChange]] = field(default_factory=list, repr=False)
    _stroke: list[_Patch] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        mask = np.asarray(self.mask)
        if mask.ndim != 2:
            raise ValueError(f"{self.stem}: a mask must be 2-D (H, W), got shape {mask.shape}")
        self.mask = np.ascontiguousarray(mask, dtype=np.uint8).copy()

    @property
    def shape(self) -> tuple[int, int]:
        return self.mask.shape  # type: ignore[return-value]

    # ------------------------------------------------------------ undo/redo
    @property
    def can_undo(self) -> bool:
        return bool(self._undo)

    @property
    def can_redo(self) -> bool:
        return bool(self._redo)

    def begin_stroke(self) -> None:
        """Start grouping the following edits into one undo step."""
        self.end_stroke()
        self._stroke = []

    def end_stroke(self) -> None:
        """Close the group opened by `begin_stroke` (no-op if none is open)."""
        stroke, self._stroke = self._stroke, None
        if stroke:
            self._push(stroke)

    def undo(self) -> bool:
        """Revert the last step; False when there is nothing to undo."""
        self.end_stroke()
        if not self._undo:
            return False
        step = self._undo.pop()
        for patch in reversed(step):
            patch.apply(self, use_after=False)
        self._redo.append(step)
        self.dirty = True
        return True

    def redo(self) -> bool:
        """Re-apply the last undone step; False when there is nothing to redo."""
        self.end_stroke()
        if not self._redo:
            return False
        step = self._redo.pop()
        for patch in step:
            patch.apply(self, use_after=True)
        self._undo.append(step)
        self.dirty = True
        return True

    def _push(self, patches: list[_Patch | _KindChange]) -> None:
        self._undo.append(patches)
        self._redo.clear()

    def _record(self, y0: int, x0: int, before: np.ndarray) -> bool:
        """Store the change of the rectangle at (y0, x0) whose old pixels were ``before``."""
        h, w = before.shape
        after = self.mask[y0 : y0 + h, x0 : x0 + w]
        changed = after != before
        if not changed.any():
            return False
        rows, cols = np.nonzero(changed)  # shrink the patch to the pixels that really changed
        r0, r1, c0, c1 = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
        patch = _Patch(y0 + r0, x0 + c0, before[r0:r1, c0:c1].copy(), after[r0:r1, c0:c1].copy())
        if self._stroke is not None:
            self._stroke.append(patch)
        else:
            self._push([patch])
        self.dirty = True
        return True

    def _box(self, points: np.ndarray, margin: int) -> tuple[int, int, int, int] | None:
        """Clipped (y0, y1, x0, x1) around ``points`` (N, 2 as x, y) grown by ``margin``."""
        h, w = self.mask.shape
        x0 = max(int(np.floor(points[:, 0].min())) - margin, 0)
        x1 = min(int(np.ceil(points[:, 0].max())) + margin + 1, w)
        y0 = max(int(np.floor(points[:, 1].min())) - margin, 0)
        y1 = min(int(np.ceil(points[:, 1].max())) + margin + 1, h)
        if x0 >= x1 or y0 >= y1:
            return None
        return y0, y1, x0, x1

    # ----------------------------------------------------------- operations
    def brush(self, points: Sequence[Point], radius: int, value: int) -> bool:
        """Paint a round brush of ``radius`` px along the polyline ``points`` (x, y) with ``value``.

        Returns True when any pixel changed.
        """
        _check_value(value)
        pts = _as_points(points)
        if len(pts) == 0:
            return False
        radius = max(int(radius), 0)
        box = self._box(pts, radius + 1)
        if box is None:
            return False
        y0, y1, x0, x1 = box
        before = self.mask[y0:y1, x0:x1].copy()
        rows, cols = np.mgrid[y0:y1, x0:x1]
        inside = _within(cols, rows, np.round(pts), radius)
        self.mask[y0:y1, x0:x1][inside] = value
        return self._record(y0, x0, before)

    def erase(self, points: Sequence[Point], radius: int) -> bool:
        """The eraser: paint background (0) along ``points``."""
        return self.brush(points, radius, BACKGROUND)

    def shown(self, suggestion: np.ndarray | None = None) -> np.ndarray:
        """The labels the user sees: the mask, or for a corrections document the corrections over
        ``suggestion`` (H, W) (without one, the corrections alone)."""
        if not self.sparse or suggestion is None:
            return self.mask
        return with_corrections(suggestion, self.mask)

    def flood_fill(self, x: int, y: int, value: int, suggestion: np.ndarray | None = None) -> bool:
        """Fill the 4-connected region of equal labels around (x, y) with ``value``; the labels are those
        the user sees (`shown`): a corrections document fills a region of the ``suggestion``."""
        _check_value(value)
        h, w = self.mask.shape
        x, y = int(x), int(y)
        labels = np.ascontiguousarray(self.shown(suggestion))
        if not (0 <= x < w and 0 <= y < h) or labels[y, x] == value:
            return False
        region = np.zeros((h + 2, w + 2), np.uint8)
        flags = 4 | cv2.FLOODFILL_MASK_ONLY | (1 << 8)
        _, _, _, (rx, ry, rw, rh) = cv2.floodFill(labels.copy(), region, (x, y), 0, 0, 0, flags)
        inside = region[1 + ry : 1 + ry + rh, 1 + rx : 1 + rx + rw].astype(bool)
        window = self.mask[ry : ry + rh, rx : rx + rw]
        before = window.copy()
        window[inside] = value
        return self._record(ry, rx, before)

    def color_fill(self, image: np.ndarray, x: int, y: int, value: int, tolerance: int = DEFAULT_TOLERANCE,
                   suggestion: np.ndarray | None = None) -> bool:
        """Fill the image region of similar colour around (x, y) with ``value`` (see `similar_color_region`).

        The fill stays inside the clicked pixel's label as the user sees it (`shown`), so it never paints
        over another object.
        """
        _check_value(value)
        h, w = self.mask.shape
        x, y = int(x), int(y)
        if not (0 <= x < w and 0 <= y < h):
            return False
        labels = self.shown(suggestion)
        region = similar_color_region(image, x, y, tolerance, allowed=labels == labels[y, x])
        rows, cols = np.nonzero(region)
        y0, y1, x0, x1 = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
        window = self.mask[y0:y1, x0:x1]
        before = window.copy()
        window[region[y0:y1, x0:x1]] = value
        return self._record(y0, x0, before)

    def polygon_fill(self, points: Sequence[Point], value: int) -> bool:
        """Fill the closed polygon with vertices ``points`` (x, y); needs at least 3 vertices."""
        _check_value(value)
        pts = _as_points(points)
        if len(pts) < 3:
            return False
        box = self._box(pts, 1)
        if box is None:
            return False
        y0, y1, x0, x1 = box
        before = self.mask[y0:y1, x0:x1].copy()
        work = before.copy()
        local = np.round(pts - (x0, y0)).astype(np.int32)
        cv2.fillPoly(work, [local], int(value))
        self.mask[y0:y1, x0:x1] = work
        return self._record(y0, x0, before)

    def set_all(self, mask: np.ndarray, sparse: bool | None = None) -> bool:
        """Replace the whole mask (e.g. accept the pseudo-label) as one undoable step; ``sparse`` False
        turns a corrections document into a full mask (True: back), in the same step."""
        mask = np.asarray(mask)
        if mask.shape != self.mask.shape:
            raise ValueError(f"{self.stem}: new mask has shape {mask.shape}, the image is {self.mask.shape}")
        self.end_stroke()
        before = self.mask.copy()
        self.mask[...] = mask.astype(np.uint8)
        if sparse is None or sparse == self.sparse:
            return self._record(0, 0, before)
        self.begin_stroke()
        self._record(0, 0, before)
        self._stroke.append(_KindChange(self.sparse, sparse))
        self.sparse, self.dirty = sparse, True
        self.end_stroke()
        return True

    # ------------------------------------------------------------------ I/O
    def save(self, folder_root: str | Path, force: bool = False) -> Path | None:
        """Save to ``verified/<stem>.png`` (see `save_verified`), or a corrections document to
        ``corrections/<stem>.png`` (see `save_document_corrections`), and mark the document clean.
        Returns the path written (None: the corrections file was removed, no correction is left)."""
        self.end_stroke()
        if self.sparse:
            path = save_document_corrections(folder_root, self.stem, self.mask, self.corrections_mtime_ns, force)
            self.corrections_mtime_ns = path.stat().st_mtime_ns if path is not None else None
        else:
            path = save_verified(folder_root, self.stem, self.mask, self.disk_mtime_ns, force=force)
            self.disk_mtime_ns = path.stat().st_mtime_ns
        self.dirty = False
        return path


def with_corrections(labels: np.ndarray, corrections: np.ndarray) -> np.ndarray:
    """``labels`` (H, W) with the corrections (255 = none) painted over them: what a corrections document shows."""
    return np.where(corrections != UNSURE, corrections, labels).astype(np.uint8)


def similar_color_region(image: np.ndarray, x: int, y: int, tolerance: int = DEFAULT_TOLERANCE,
                         allowed: np.ndarray | None = None) -> np.ndarray:
    """(H, W) bool: the 8-connected pixels around (x, y) whose colour is within ``tolerance`` of the seed's.

    ``image`` is (H, W, 3) uint8 RGB; each channel may differ from the seed colour by at most
    ``tolerance`` (0..255), measured on a lightly smoothed copy so sensor noise and JPEG blocks do
    not punch holes in the region. ``allowed`` (H, W) bool limits the region (None: the whole image).
    """
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"a colour fill needs an (H, W, 3) image, got shape {image.shape}")
    h, w = image.shape[:2]
    if not (0 <= x < w and 0 <= y < h):
        raise ValueError(f"seed ({x}, {y}) is outside the {w}x{h} image")
    smooth = cv2.GaussianBlur(np.ascontiguousarray(image, dtype=np.uint8), (3, 3), 0)
    region = np.zeros((h + 2, w + 2), np.uint8)
    if allowed is not None:
        if allowed.shape != (h, w):
            raise ValueError(f"allowed has shape {allowed.shape}, the image is {(h, w)}")
        region[1:-1, 1:-1][~allowed] = 1  # floodFill never crosses non-zero mask pixels
    tol = (int(tolerance),) * 3
    flags = 8 | cv2.FLOODFILL_MASK_ONLY | cv2.FLOODFILL_FIXED_RANGE | (2 << 8)
    cv2.floodFill(smooth, region, (int(x), int(y)), 0, tol, tol, flags)
    return region[1:-1, 1:-1] == 2


def _check_value(value: int) -> None:
    if not 0 <= int(value) <= 255:
        raise ValueError(f"a mask value must be 0..255, got {value}")


def _within(xs: np.ndarray, ys: np.ndarray, polyline: np.ndarray, radius: float) -> np.ndarray:
    """Pixels (xs, ys) within ``radius`` + 0.5 of the polyline (so a stroke is 2r+1 px wide)."""
    starts = polyline if len(polyline) == 1 else polyline[:-1]
    ends = polyline if len(polyline) == 1 else polyline[1:]
    inside = np.zeros(xs.shape, bool)
    for (ax, ay), (bx, by) in zip(starts, ends):
        dx, dy = bx - ax, by - ay
        length2 = dx * dx + dy * dy
        t = np.clip(((xs - ax) * dx + (ys - ay) * dy) / length2, 0.0, 1.0) if length2 > 0 else 0.0
        inside |= (xs - ax - t * dx) ** 2 + (ys - ay - t * dy) ** 2 <= (radius + 0.5) ** 2
    return inside


def _as_points(points: Sequence[Point] | np.ndarray) -> np.ndarray:
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    if not np.isfinite(pts).all():
        raise ValueError("mask edit points must be finite numbers")
    return pts


def verified_path(folder_root: str | Path, stem: str) -> Path:
    """Where the verified mask of ``stem`` lives: ``<folder_root>/verified/<stem>.png``."""
    return Path(folder_root) / VERIFIED_DIR / f"{stem}.png"


def open_document(folder_root: str | Path, stem: str, shape: tuple[int, int],
                  older_file: Path | None = None, start_empty: bool = False) -> MaskDocument:
    """The editable mask of ``stem``: its verified mask when one exists, else a corrections document with
    its corrections (all 255 when it has none).

    ``older_file``: the same mask saved under an older name (``LabelledFolder`` still reads it); it is
    loaded when ``verified/<stem>.png`` does not exist, and saving writes the current name. An unreadable
    file raises ``ImageLoadError``; ``start_empty`` then gives an empty document of the same kind (all
    background, or no correction) whose save asks before replacing that file.
    """
    path = verified_path(folder_root, stem)
    if path.exists():
        if start_empty:
            return MaskDocument(np.full(shape, BACKGROUND, np.uint8), stem)
        return MaskDocument(load_mask(path, shape=shape), stem, disk_mtime_ns=path.stat().st_mtime_ns)
    if older_file is not None and older_file.exists() and not start_empty:
        return MaskDocument(load_mask(older_file, shape=shape), stem)
    corrections_file = corrections_path(folder_root, stem)
    mtime = corrections_file.stat().st_mtime_ns if corrections_file.exists() and not start_empty else None
    corrections = None if start_empty else load_corrections(folder_root, stem, shape)
    mask = corrections if corrections is not None else np.full(shape, UNSURE, np.uint8)
    return MaskDocument(mask, stem, sparse=True, corrections_mtime_ns=mtime)


def _check_unchanged(path: Path, loaded_mtime_ns: int | None, what: str, conflict: type[ChangedOnDisk]) -> None:
    """Raise ``conflict`` when ``path``'s modification time is no longer ``loaded_mtime_ns`` (None: no file)."""
    current = path.stat().st_mtime_ns if path.exists() else None
    if current != loaded_mtime_ns:
        change = "was created" if loaded_mtime_ns is None else ("was deleted" if current is None else "was changed")
        raise conflict(f"{path}: the {what} {change} on disk after it was loaded; "
                       "reload the image or save again to overwrite it")


def save_document_corrections(folder_root: str | Path, stem: str, corrections: np.ndarray,
                              loaded_mtime_ns: int | None = None, force: bool = False) -> Path | None:
    """Write ``corrections`` atomically to ``corrections/<stem>.png`` (all 255 removes the file), unless the
    file changed on disk since it was loaded (``loaded_mtime_ns``; `CorrectionsConflict`, unless ``force``)."""
    if not force:
        _check_unchanged(corrections_path(folder_root, stem), loaded_mtime_ns, "corrections file",
                         CorrectionsConflict)
    return save_corrections(folder_root, stem, corrections)


def save_verified(
    folder_root: str | Path, stem: str, mask: np.ndarray, loaded_mtime_ns: int | None = None, force: bool = False
) -> Path:
    """Write ``mask`` atomically to ``verified/<stem>.png`` as a VOC-palette PNG.

    ``loaded_mtime_ns`` is the file's ``st_mtime_ns`` when the mask was loaded (``None``: there
    was no file). If the file on disk no longer matches that, `VerifiedMaskConflict` is raised
    instead of overwriting it, unless ``force`` is True.
    """
    path = verified_path(folder_root, stem)
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"{path}: a mask must be 2-D (H, W), got shape {mask.shape}")
    if not force:
        _check_unchanged(path, loaded_mtime_ns, "verified mask", VerifiedMaskConflict)
    save_palette_png(path, mask.astype(np.uint8))
    return path


def uncertainty_score(pseudo_label: np.ndarray) -> float:
    """Share of unsure (255) pixels in a pseudo-label: the review-order key (worst first)."""
    labels = np.asarray(pseudo_label)
    if labels.size == 0:
        return 0.0
    return float(np.count_nonzero(labels == UNSURE)) / labels.size


def review_order(scores: Iterable[tuple[str, float]]) -> list[str]:
    """Stems sorted most-uncertain first (ties by stem), for reviewing the worst images first."""
    return [stem for stem, _ in sorted(scores, key=lambda item: (-item[1], item[0]))]
