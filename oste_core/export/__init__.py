"""Mask export: PASCAL VOC palette PNGs, labelme JSON, CVAT "Segmentation mask 1.1" zip, and
CAM heatmap PNGs.

`export_folder` is the export of a labelled folder that both ``oste export`` and the GUI use: per
image the user's verified mask (it always wins unless ``prefer_verified=False``) or one of the
run's predictions (``what``: "suggestion", the full mask, by default; "pseudo", the FBE
pseudo-label with 255 = unsure; "seg", the segmentation branch), or only the verified masks
("verified"). Predictions are made one image at a time and written at once, so a large folder
never sits in memory. `export_masks` writes given (sample, mask) pairs the same way.

Both write, under ``out_dir``, ``voc/`` (see `oste_core.export.voc`), ``labelme/``
(`oste_core.export.labelme`) and ``cvat_segmentation_mask_1.1.zip`` (`oste_core.export.cvat`).
Masks are exported at each image's own size (after EXIF rotation): a verified mask is read at its
own, full resolution, and a predicted mask (made at the working size, or 1.5 times it in the fast mode) is
resized with nearest neighbour (labelme polygons are traced before that and scaled). Before anything is written or
predicted, every target path is checked: existing files raise `ExportExistsError` unless
``overwrite=True``, and a target inside a project's ``verified/`` folder (the user's verified
masks) raises `ExportTargetError`. Then the free space is checked against an estimate
(`estimate_export_bytes`): too little raises `DiskFullError` naming the folder, the space needed
and the space free. A disk that fills up anyway stops the export: the files it wrote are removed
and `DiskFullError` says so. Every file is written atomically; the temp files a killed export left
in the target folders are removed first (`oste_core.export.guard`).
"""
from __future__ import annotations

from collections import Counter
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, Iterator, Sequence

import cv2
import numpy as np

from oste_core.data.image_io import ImageLoadError, image_size, load_mask
from oste_core.export.cvat import UNSURE_LABEL, cvat_zip, cvat_zip_path
from oste_core.export.guard import ExportGuard, estimate_export_bytes
from oste_core.export.labelme import labelme_path, labels_path, write_labelme_json, write_labels_txt
from oste_core.export.palette import VOC_PALETTE, colorize, save_palette_png
from oste_core.export.voc import voc_list_paths, voc_mask_path, write_voc_lists, write_voc_mask
from oste_core.utils.io import atomic_write_bytes

if TYPE_CHECKING:
    from oste_core.data.folder import LabelledFolder, Sample
    from oste_core.engine.predictor import Prediction, Predictor

FORMATS = ("voc", "labelme", "cvat")
VERIFIED_DIR = "verified"
# what an export writes where no verified mask wins -> the `Prediction` field it takes
PREDICTION_FIELDS = {"suggestion": "suggestion", "pseudo": "pseudo_label", "seg": "seg"}
SOURCES = (*PREDICTION_FIELDS, "verified")
CVAT_UNSURE_NOTE = (f"CVAT: unsure pixels (255) are the label '{UNSURE_LABEL}' (colour 224,224,192), "
                    f"not background; add a label '{UNSURE_LABEL}' to the CVAT task before importing")

__all__ = [
    "FORMATS",
    "VOC_PALETTE",
    "ExportExistsError",
    "ExportSummary",
    "ExportTargetError",
    "PREDICTION_FIELDS",
    "SOURCES",
    "check_export_targets",
    "check_formats",
    "colorize",
    "estimate_export_bytes",
    "export_folder",
    "export_masks",
    "export_targets",
    "save_heatmap_png",
    "save_palette_png",
]


class ExportExistsError(FileExistsError):
    """Some export files already exist and ``overwrite`` was not given; nothing was written."""

    def __init__(self, existing: list[Path]) -> None:
        self.existing = existing
        shown = ", ".join(str(p) for p in existing[:5]) + (", ..." if len(existing) > 5 else "")
        super().__init__(f"{len(existing)} export file(s) already exist ({shown}); nothing was written. "
                         "Choose another folder or allow overwriting.")


class ExportTargetError(ValueError):
    """The export would write into a project's verified/ folder; nothing was written."""


@dataclass
class ExportSummary:
    out_dir: Path
    counts: dict[str, int]  # format -> images exported
    written: list[Path] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # "path: reason" of images not exported
    problems: list[str] = field(default_factory=list)  # exported, but something looked wrong
    notes: list[str] = field(default_factory=list)  # what the user should know about the files
    cvat_unsure: int = 0  # images whose CVAT masks have the label "unsure"

    def __str__(self) -> str:
        counts = ", ".join(f"{fmt} {count}" for fmt, count in self.counts.items())
        lines = [f"exported to {self.out_dir}: {counts} image(s); {len(self.skipped)} skipped"]
        lines += [f"  skipped: {line}" for line in self.skipped] + [f"  problem: {line}" for line in self.problems]
        return "\n".join(lines + [f"  note: {line}" for line in self.notes])


def check_formats(formats: Sequence[str]) -> tuple[str, ...]:
    """The formats without repeats; ValueError naming the unknown ones."""
    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        raise ValueError(f"unknown export format(s) {unknown or list(formats)}; choose from {', '.join(FORMATS)}")
    return tuple(dict.fromkeys(formats))


def export_targets(samples: Sequence["Sample"], out_dir: str | Path, formats: Sequence[str]) -> list[Path]:
    """Every file an export of ``samples`` in ``formats`` would write."""
    out_dir = Path(out_dir)
    targets: list[Path] = []
    for fmt in check_formats(formats):
        if fmt == "voc":
            targets += [voc_mask_path(out_dir, s.stem) for s in samples] + voc_list_paths(out_dir)
        elif fmt == "labelme":
            targets += [labelme_path(out_dir, s.stem) for s in samples] + [labels_path(out_dir)]
        else:
            targets.append(cvat_zip_path(out_dir))
    return targets


def _project_root(sample: "Sample") -> Path:
    return sample.image_path.parents[sample.rel.count("/")]


def check_export_targets(
    samples: Sequence["Sample"], out_dir: str | Path, formats: Sequence[str], overwrite: bool = False
) -> list[Path]:
    """Check an export before writing: unique stems, no verified/ folder, nothing existing
    (unless ``overwrite``). Returns the target paths."""
    repeated = sorted(stem for stem, count in Counter(s.stem for s in samples).items() if count > 1)
    if repeated:
        raise ValueError(f"images with the same stem cannot be exported together: {', '.join(repeated[:10])}")
    targets = export_targets(samples, out_dir, formats)
    protected_dirs = {(_project_root(s) / VERIFIED_DIR).resolve() for s in samples}
    protected_dirs |= {s.verified_mask.parent.resolve() for s in samples if s.verified_mask is not None}
    out = Path(out_dir).resolve()
    for folder in protected_dirs:
        if out == folder or folder in out.parents:
            raise ExportTargetError(f"{out_dir}: refusing to export into {folder}, which holds the verified masks")
    verified = {s.verified_mask.resolve() for s in samples if s.verified_mask is not None}
    clashing = [t for t in targets if t.resolve() in verified]
    if clashing:
        raise ExportTargetError(f"{clashing[0]}: refusing to overwrite a verified mask")
    existing = [t for t in targets if t.exists()]
    if existing and not overwrite:
        raise ExportExistsError(existing)
    return targets


def _check_mask(mask: np.ndarray, num_classes: int) -> np.ndarray:
    mask = np.asarray(mask)
    if mask.ndim != 2 or not mask.size:
        raise ValueError(f"mask must be a non-empty 2-D (H, W) array, got shape {mask.shape}")
    if mask.min() < 0 or ((mask > num_classes) & (mask != 255)).any():
        raise ValueError(f"mask values must be 0..{num_classes} or 255")
    return mask.astype(np.uint8)


def _downscaled_shape(shape: tuple[int, int], longest: int) -> tuple[int, int]:
    """The shape an image of ``shape`` has once its longest side is ``longest`` (as `load_image` does)."""
    scale = longest / max(shape)
    return max(1, round(shape[0] * scale)), max(1, round(shape[1] * scale))


def _fit_mask(mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A predicted mask resized (nearest neighbour) to the image's size."""
    if mask.shape == shape:
        return mask
    return cv2.resize(mask, (shape[1], shape[0]), interpolation=cv2.INTER_NEAREST)


def _write_one(
    sample: "Sample",
    mask: np.ndarray,
    out_dir: Path,
    class_names: Sequence[str],
    formats: tuple[str, ...],
    image_root: str | Path | None,
    summary: ExportSummary,
    add_to_cvat: Callable[[str, np.ndarray], bool] | None,
) -> bool:
    """Write one mask in every format at the image's size; False (and listed as skipped) when it cannot be."""
    image_path = _image_path(sample, image_root)
    try:
        mask = _check_mask(mask, len(class_names))
        shape = image_size(image_path)
    except ImageLoadError as exc:
        summary.skipped.append(f"{exc} (not exported)")
        return False
    except ValueError as exc:
        summary.skipped.append(f"{image_path}: {exc} (not exported)")
        return False
    expected = _downscaled_shape(shape, max(mask.shape))
    if abs(expected[0] - mask.shape[0]) > 1 or abs(expected[1] - mask.shape[1]) > 1:
        summary.problems.append(f"{image_path}: the mask ({mask.shape[0]}x{mask.shape[1]}) does not "
                                f"have the image's proportions ({shape[0]}x{shape[1]}); stretched to fit")
    if "labelme" in formats:  # traced at the mask's own resolution, scaled to the image
        summary.written.append(write_labelme_json(
            labelme_path(out_dir, sample.stem), mask, class_names, sample.tags, image_path, shape))
    mask = _fit_mask(mask, shape)
    if "voc" in formats:
        summary.written.append(write_voc_mask(out_dir, sample.stem, mask))
    if add_to_cvat is not None:
        summary.cvat_unsure += add_to_cvat(sample.stem, mask)
    for fmt in formats:
        summary.counts[fmt] += 1
    return True


def _image_path(sample: "Sample", image_root: str | Path | None) -> Path:
    if not sample.image_path.is_absolute() and image_root is not None:
        return Path(image_root) / sample.image_path
    return sample.image_path


def _image_shapes(samples: Iterable["Sample"], image_root: str | Path | None) -> Iterator[tuple[int, int]]:
    """(height, width) of each readable image (for the space estimate; unreadable ones are skipped later)."""
    for sample in samples:
        try:
            yield image_size(_image_path(sample, image_root))
        except ImageLoadError:
            continue


def _guarded_write(
    items: Iterable[tuple["Sample", np.ndarray | None]],
    samples: Sequence["Sample"],
    out_dir: Path,
    class_names: Sequence[str],
    formats: tuple[str, ...],
    overwrite: bool,
    on_progress: Callable[[int, int], None] | None,
    image_root: str | Path | None,
    summary: ExportSummary,
) -> ExportSummary:
    """Check the targets and the free space, then `_write`; a full disk removes what was written."""
    targets = check_export_targets(samples, out_dir, formats, overwrite)
    guard = ExportGuard(out_dir, targets, formats)
    guard.prepare(_image_shapes(samples, image_root), len(samples))
    with guard.removing_on_full_disk(summary, len(samples)):
        return _write(items, len(samples), out_dir, class_names, formats, on_progress, image_root, summary)


def _write(
    items: Iterable[tuple["Sample", np.ndarray | None]],
    total: int,
    out_dir: Path,
    class_names: Sequence[str],
    formats: tuple[str, ...],
    on_progress: Callable[[int, int], None] | None,
    image_root: str | Path | None,
    summary: ExportSummary,
) -> ExportSummary:
    """Write each (sample, mask) as it comes in every format, then the per-export lists.

    A mask of None stands for an image already skipped (and listed in ``summary.skipped``).
    """
    exported: list[str] = []
    with ExitStack() as stack:
        add_to_cvat = stack.enter_context(cvat_zip(cvat_zip_path(out_dir), class_names)) if "cvat" in formats else None
        for done, (sample, mask) in enumerate(items, start=1):
            if mask is not None and _write_one(sample, mask, out_dir, class_names, formats, image_root, summary,
                                               add_to_cvat):
                exported.append(sample.stem)
            if on_progress is not None:
                on_progress(done, total)
    if "voc" in formats:
        summary.written += write_voc_lists(out_dir, class_names, exported)
    if "labelme" in formats:
        summary.written.append(write_labels_txt(out_dir, class_names))
    if "cvat" in formats:
        summary.written.append(cvat_zip_path(out_dir))
        if summary.cvat_unsure:
            summary.notes.append(f"{CVAT_UNSURE_NOTE} ({summary.cvat_unsure} image(s) have unsure pixels)")
    return summary


def export_masks(
    items: Iterable[tuple["Sample", np.ndarray]],
    out_dir: str | Path,
    class_names: Sequence[str],
    formats: Sequence[str] = ("voc",),
    overwrite: bool = False,
    on_progress: Callable[[int, int], None] | None = None,
    image_root: str | Path | None = None,
) -> ExportSummary:
    """Export (sample, mask) pairs (mask: (H, W) uint8, 0..K, 255 = unsure) in ``formats``.

    ``image_root`` resolves samples whose ``image_path`` is relative. Images that cannot be read
    (their size is needed) or masks with bad values are skipped and reported in the summary.
    The items are read into a list first (the targets are checked before anything is written).
    """
    formats = check_formats(formats)
    items = list(items)
    summary = ExportSummary(Path(out_dir), {fmt: 0 for fmt in formats})
    return _guarded_write(items, [sample for sample, _ in items], Path(out_dir), class_names, formats, overwrite,
                          on_progress, image_root, summary)


def verified_file(folder: "LabelledFolder", sample: "Sample") -> Path | None:
    """The sample's verified mask on disk now: under its stem, else the (older) file it was opened with."""
    path = folder.verified_path(sample)
    if path.is_file():
        return path
    return sample.verified_mask if sample.verified_mask is not None and sample.verified_mask.is_file() else None


def export_folder(
    folder: "LabelledFolder",
    out_dir: str | Path,
    formats: Sequence[str] = ("voc",),
    what: str = "suggestion",
    predictor: "Predictor | None" = None,
    prefer_verified: bool = True,
    overwrite: bool = False,
    on_progress: Callable[[int, int], None] | None = None,
    on_prediction: Callable[["Sample", "Prediction"], None] | None = None,
) -> ExportSummary:
    """Export every sample of ``folder`` (see the module docstring for ``what``).

    ``predictor`` (of the folder's classes) is needed unless ``what == "verified"``, which exports
    only the images that have a verified mask; it is first refitted with the folder's verified masks and
    sparse corrections (``Predictor.learn_from_user``), which are part of the suggestions, never exported as
    verified masks.
    A verified mask is exported at its own resolution; with ``prefer_verified`` it replaces the
    prediction. ``on_prediction(sample, prediction)`` sees each prediction made (e.g. to write
    CAMs). Unreadable images or masks are skipped and listed in the summary.
    """
    if what not in SOURCES:
        raise ValueError(f"unknown mask source {what!r}; choose from {', '.join(SOURCES)}")
    if what != "verified" and predictor is None:
        raise ValueError(f"exporting {what} masks needs a trained run; without one, export the verified masks only")
    if predictor is not None:
        predictor.learn_from_user(folder)  # the suggestions follow every verified mask and correction
    formats = check_formats(formats)
    out_dir = Path(out_dir)
    jobs = [(s, verified_file(folder, s)) for s in folder.samples]
    jobs = [(s, path) for s, path in jobs if what != "verified" or path is not None]
    summary = ExportSummary(out_dir, {fmt: 0 for fmt in formats})

    def masks() -> Iterator[tuple["Sample", np.ndarray | None]]:
        for sample, path in jobs:
            try:
                if path is not None and (what == "verified" or prefer_verified):
                    mask = load_mask(path)
                else:
                    prediction = predictor.predict_sample(folder, sample)
                    if on_prediction is not None:
                        on_prediction(sample, prediction)
                    mask = getattr(prediction, PREDICTION_FIELDS[what])
            except ImageLoadError as exc:
                summary.skipped.append(f"{exc} (not exported)")
                mask = None
            yield sample, mask

    return _guarded_write(masks(), [s for s, _ in jobs], out_dir, folder.class_names, formats, overwrite,
                          on_progress, None, summary)


def save_heatmap_png(path: str | Path, cam: np.ndarray, image: np.ndarray | None = None, alpha: float = 0.5) -> Path:
    """Write a CAM (H, W) in [0, 1] as a JET heatmap PNG, blended over ``image`` (RGB) if given, atomically."""
    cam = np.nan_to_num(np.asarray(cam, dtype=np.float32), nan=0.0)
    if cam.ndim != 2:
        raise ValueError(f"a CAM must be 2-D (H, W), got shape {cam.shape}")
    heat = cv2.applyColorMap(np.rint(np.clip(cam, 0, 1) * 255).astype(np.uint8), cv2.COLORMAP_JET)
    if image is not None:
        image_bgr = cv2.cvtColor(np.asarray(image, dtype=np.uint8), cv2.COLOR_RGB2BGR)
        if heat.shape[:2] != image_bgr.shape[:2]:
            heat = cv2.resize(heat, (image_bgr.shape[1], image_bgr.shape[0]), interpolation=cv2.INTER_LINEAR)
        heat = cv2.addWeighted(image_bgr, 1 - alpha, heat, alpha, 0)
    ok, encoded = cv2.imencode(".png", heat)
    if not ok:
        raise RuntimeError(f"{path}: PNG encoding failed")
    return atomic_write_bytes(path, encoded.tobytes())
