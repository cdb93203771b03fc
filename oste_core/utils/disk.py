"""Free disk space: check before a large write, and one clear error when the disk is (or gets) full."""
from __future__ import annotations

import errno
import shutil
from pathlib import Path

RESERVE_BYTES = 16 * 2**20  # never plan to fill a disk to its last byte


class DiskFullError(OSError):
    """Not enough free space; the message names the folder, the space needed and the space free."""

    def __init__(self, message: str) -> None:
        super().__init__(errno.ENOSPC, message)
        self.message = message

    def __str__(self) -> str:
        return self.message


def format_bytes(count: float) -> str:
    """``1536`` -> ``1.5 KB``; ``3.2e9`` -> ``3.0 GB`` (powers of 1024)."""
    for unit in ("bytes", "KB", "MB", "GB"):
        if abs(count) < 1024 or unit == "GB":
            return f"{count:.0f} {unit}" if unit == "bytes" else f"{count:.1f} {unit}"
        count /= 1024
    return f"{count:.1f} GB"


def free_bytes(folder: str | Path) -> int:
    """Free space for this user on the disk that holds ``folder`` (or its nearest existing parent)."""
    folder = Path(folder).absolute()
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return shutil.disk_usage(folder).free


def check_free_space(folder: str | Path, needed: int, what: str,
                     hint: str = "free some space or choose another folder") -> None:
    """Raise `DiskFullError` before writing ``what`` when ``folder``'s disk has less than ``needed`` bytes
    (plus a small reserve) free."""
    free = free_bytes(folder)
    if needed + RESERVE_BYTES > free:
        raise DiskFullError(f"{folder}: not enough free space for {what}: needs about "
                            f"{format_bytes(needed + RESERVE_BYTES)}, {format_bytes(free)} free; {hint}")
