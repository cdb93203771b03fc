"""Atomic file writes: write to a temp file in the same folder, fsync, then rename over the target.

A crash at any instant leaves the old file or the new one, never a mix. The new file gets the mode an
ordinary ``open()`` would give it under the user's umask (0644 by default), or keeps the mode of the file it
replaces, so a colleague, labelme or a CVAT server running as another user can read it.

A temp file is named ``.<name>.<host>-<pid>-<random>.oste-tmp<suffix>``: hidden (every folder scan skips
names starting with '.'), and recognisable by `is_temp_file`. `remove_stale_temp_files` deletes the ones a
killed process left behind (its pid is gone on this host, or, from another host, older than a day), and
those of earlier versions, named by ``mkstemp`` (``.<name>.<8 characters>.tmp<suffix>``), once an hour old.
"""
from __future__ import annotations

import errno
import os
import re
import secrets
import socket
import stat
import time
import zlib
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

TEMP_MARK = ".oste-tmp"
FOREIGN_TEMP_AGE_S = 24 * 3600  # a temp file of another host is stale after this long
LEGACY_TEMP = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp(\.[^.]+)?$")  # what mkstemp named them before
LEGACY_TEMP_AGE_S = 3600


def host_id() -> str:
    """Six hex digits naming this machine in temp file names (a shared folder may see several machines)."""
    return f"{zlib.crc32(socket.gethostname().encode('utf-8')) & 0xFFFFFF:06x}"


def pid_alive(pid: int) -> bool:
    """True when a process with this id runs on this machine (or may: it belongs to another user)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def is_temp_file(path: str | Path) -> bool:
    """True for a temp file of `atomic_path` (a write in progress, or left by a crash)."""
    name = Path(path).name
    return name.startswith(".") and (TEMP_MARK in name or LEGACY_TEMP.match(name) is not None)


def _temp_owner(name: str) -> tuple[str, int] | None:
    """(host id, pid) of a temp file's writer, from its name; None when the name has no owner part."""
    parts = name.split(TEMP_MARK)[0].rsplit(".", 1)[-1].split("-")
    if len(parts) != 3 or not parts[1].isdigit():
        return None
    return parts[0], int(parts[1])


def is_stale_temp_file(path: Path) -> bool:
    """A temp file whose writer is gone: its pid is dead on this host, or it is another host's and old."""
    owner = _temp_owner(path.name)
    if owner is not None and owner[0] == host_id():
        return not pid_alive(owner[1])
    age = LEGACY_TEMP_AGE_S if TEMP_MARK not in path.name else FOREIGN_TEMP_AGE_S
    try:
        return time.time() - path.stat().st_mtime > age
    except FileNotFoundError:
        return False


def remove_stale_temp_files(*folders: str | Path, recursive: bool = False) -> list[Path]:
    """Delete the temp files killed writers left in ``folders`` (and below, if ``recursive``); the paths removed."""
    removed: list[Path] = []
    for folder in folders:
        folder = Path(folder)
        if not folder.is_dir():
            continue
        for file in folder.rglob(".*") if recursive else folder.glob(".*"):
            if is_temp_file(file) and file.is_file() and is_stale_temp_file(file):
                file.unlink(missing_ok=True)
                removed.append(file)
    return removed


def _create_temp(path: Path) -> Path:
    """Create an empty temp file beside ``path``: mode from the umask (as ``open()``), or the replaced file's."""
    try:
        replaced_mode = stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        replaced_mode = None
    owner = f"{host_id()}-{os.getpid()}"
    while True:
        tmp = path.with_name(f".{path.name}.{owner}-{secrets.token_hex(4)}{TEMP_MARK}{path.suffix}")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # the umask applies, as for open()
        except FileExistsError:
            continue
        try:
            if replaced_mode is not None:
                os.fchmod(fd, replaced_mode)
        finally:
            os.close(fd)
        return tmp


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temp path beside ``path``; on success it is renamed over ``path``, else deleted."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp_path = _create_temp(path)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def file_signature(path: str | Path) -> tuple[int, int, int] | None:
    """(inode, size, mtime in ns) of a file, None when absent: changes whenever anyone rewrites it."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return None
    return info.st_ino, info.st_size, info.st_mtime_ns


def is_disk_full(exc: BaseException) -> bool:
    """True for "no space left on device" and "disk quota exceeded"."""
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)


def folder_size(path: str | Path) -> int:
    """Bytes of the files under ``path`` (0 when it does not exist)."""
    path = Path(path)
    if not path.is_dir():
        return 0
    total = 0
    for file in path.rglob("*"):
        try:
            total += file.stat().st_size if file.is_file() else 0
        except FileNotFoundError:  # deleted meanwhile (the cache's cap, a finished temp file)
            continue
    return total
