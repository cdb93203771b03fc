"""An export's disk safety: stale temp files removed and the free space checked before it starts, and what it
wrote removed again when the disk fills up anyway (no half export is left behind)."""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Iterator, Sequence

from oste_core.utils.disk import DiskFullError, check_free_space, format_bytes, free_bytes
from oste_core.utils.io import is_disk_full, remove_stale_temp_files

if TYPE_CHECKING:
    from oste_core.export import ExportSummary

# estimated bytes per exported image: a fixed part + a part per pixel (measured: 0.03 / 0.05 / 0.06 bytes per
# pixel for VOC / labelme / CVAT on masks with a few regions; labelme reaches 1.5 on noise-like masks)
EXPORT_BYTES = {"voc": (1024, 0.05), "labelme": (2048, 0.1), "cvat": (1024, 0.1)}


def estimate_export_bytes(shapes: Iterable[tuple[int, int]], formats: Sequence[str]) -> int:
    """About how many bytes exporting images of these (height, width) in ``formats`` writes."""
    total = 0.0
    for height, width in shapes:
        total += sum(EXPORT_BYTES[f][0] + EXPORT_BYTES[f][1] * height * width for f in formats)
    return int(total)


class ExportGuard:
    """Prepares the target folders of one export and undoes it on a full disk."""

    def __init__(self, out_dir: Path, targets: Sequence[Path], formats: Sequence[str]) -> None:
        self.out_dir = out_dir
        self.targets = list(targets)
        self.formats = tuple(formats)
        folders = {t.parent for t in self.targets} | {out_dir}
        self.folders = sorted(folders)
        self.new_folders = sorted({p for t in self.targets for p in [t.parent, *t.parent.parents]
                                   if not p.exists() and (p == out_dir or out_dir in p.parents)}, reverse=True)
        self.needed = 0

    def prepare(self, shapes: Iterable[tuple[int, int]], count: int) -> None:
        """Remove killed exports' temp files here; `DiskFullError` when the estimate exceeds the free space."""
        remove_stale_temp_files(*self.folders)
        # files replaced one at a time free their space as they go; the CVAT zip is replaced whole at the end
        replaced = sum(t.stat().st_size for t in self.targets if t.is_file() and t.suffix != ".zip")
        self.needed = max(estimate_export_bytes(shapes, self.formats) - replaced, 0)
        check_free_space(self.out_dir, self.needed, f"exporting {count} image(s) as {', '.join(self.formats)}")

    @contextmanager
    def removing_on_full_disk(self, summary: "ExportSummary", total: int) -> Iterator[None]:
        """Run the export; on a full disk remove every file it wrote (and the folders it made), then raise."""
        try:
            yield
        except OSError as exc:
            if not is_disk_full(exc) or isinstance(exc, DiskFullError):
                raise
            removed = 0
            for path in summary.written:
                if path.is_file():
                    path.unlink()
                    removed += 1
            for folder in self.new_folders:
                if folder.is_dir() and not any(folder.iterdir()):
                    folder.rmdir()
            done = max(summary.counts.values(), default=0)
            raise DiskFullError(
                f"{self.out_dir}: the disk filled up after {done} of {total} image(s) "
                f"({format_bytes(free_bytes(self.out_dir))} free); removed the {removed} file(s) this export had "
                f"written, so no half export is left; free at least {format_bytes(self.needed)} and export again"
            ) from exc
