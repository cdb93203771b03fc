"""Sparse corrections: the pixels an annotator stroked on an image that is not verified.

``<folder>/corrections/<stem>.png`` is a VOC palette PNG at the image's size: the stroked pixels hold
their label (0 background, 1..K a class, as the brush, fill and polygon painted them; the eraser paints
background) and every other pixel is 255, "no correction". They teach the folder pixel classifier and the
heads like verified masks without marking the image verified, and they are seeds of the image's own
suggestion. A script or another tool may write them too. An all-255 mask removes the file.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from oste_core.data import load_mask
from oste_core.data.folder import CORRECTIONS_DIR, VERIFIED_DIR, Sample
from oste_core.export.palette import save_palette_png
from oste_core.labels import UNSURE, clean_labels


def corrections_path(folder_root: str | Path, stem: str) -> Path:
    """Where the sparse corrections of ``stem`` live: ``<folder_root>/corrections/<stem>.png``."""
    return Path(folder_root) / CORRECTIONS_DIR / f"{stem}.png"


def has_corrections(corrections: np.ndarray | None) -> bool:
    return corrections is not None and bool((corrections != UNSURE).any())


def load_corrections(folder_root: str | Path, stem: str, shape: tuple[int, int] | None = None,
                     num_classes: int | None = None) -> np.ndarray | None:
    """The corrections of ``stem`` (resized nearest to ``shape``), or None when there are none.

    Labels above ``num_classes`` become 255. An unreadable file raises ``ImageLoadError`` (naming it)."""
    path = corrections_path(folder_root, stem)
    if not path.is_file():
        return None
    mask = load_mask(path, shape=shape)
    if num_classes is not None:
        clean_labels(mask, num_classes)
    return mask if has_corrections(mask) else None


def save_corrections(folder_root: str | Path, stem: str, corrections: np.ndarray) -> Path | None:
    """Write ``corrections`` (H, W) atomically; an all-255 mask deletes the file. Returns the path written."""
    path = corrections_path(folder_root, stem)
    mask = np.asarray(corrections)
    if mask.ndim != 2:
        raise ValueError(f"{path}: corrections must be 2-D (H, W), got shape {mask.shape}")
    if not has_corrections(mask):
        path.unlink(missing_ok=True)
        return None
    save_palette_png(path, mask.astype(np.uint8))
    return path


def user_labels(folder_root: str | Path, stem: str, verified_file: Path | None, shape: tuple[int, int] | None,
                num_classes: int) -> tuple[np.ndarray | None, bool]:
    """What the annotator said about one image: its verified mask (``True``), else its corrections
    (``False``), at ``shape``; ``(None, False)`` when neither exists."""
    verified_file = verified_file or Path(folder_root) / VERIFIED_DIR / f"{stem}.png"
    if verified_file.is_file():
        mask = load_mask(verified_file, shape=shape)
        return clean_labels(mask, num_classes), True
    return load_corrections(folder_root, stem, shape, num_classes), False


def user_label_version(folder_root: str | Path, sample: Sample) -> tuple[int | None, int | None]:
    """The modification times of a sample's verified mask and corrections (None where absent): what the
    annotator's pixels of that image depend on."""
    verified = sample.verified_mask or Path(folder_root) / VERIFIED_DIR / f"{sample.stem}.png"
    corrections = corrections_path(folder_root, sample.stem)
    return tuple(path.stat().st_mtime_ns if path.is_file() else None for path in (verified, corrections))


def has_user_labels(folder_root: str | Path, sample: Sample) -> bool:
    """True when the sample has a verified mask or a corrections file."""
    return any(version is not None for version in user_label_version(folder_root, sample))
