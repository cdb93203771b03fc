"""Advisory folder locks: one writer at a time per run folder (training, update) and per labelled folder
(a GUI session).

The lock is ``<folder>/.oste.lock``, held with ``fcntl.flock`` for as long as the writer runs and holding
JSON that names it (pid, host, command, start time). The kernel drops a flock when its process dies, so a
lock left by a killed process is stale at once; the file's content then only says who left it. Where
``flock`` is not supported (some network file systems) the content decides: a lock whose pid is not
alive on this host is stale; one of another host is respected (the message says which file to delete).
"""
from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import sys
import time
from pathlib import Path
from types import TracebackType

from oste_core.utils.io import pid_alive

LOCK_FILE = ".oste.lock"


class FolderLockedError(RuntimeError):
    """Another process writes this folder; ``holder`` is its lock record (pid, host, command, started)."""

    def __init__(self, folder: Path, holder: dict, lock_file: Path) -> None:
        self.folder, self.holder, self.lock_file = folder, holder, lock_file
        super().__init__(f"{folder}: in use by {describe_holder(holder)}; wait until it ends, or close it "
                         f"(if it is no longer running, delete {lock_file})")


def describe_holder(holder: dict) -> str:
    """``"oste update (pid 123 on host, since 2024-05-01 10:00:00)"``."""
    return (f"{holder.get('command') or 'another program'} (pid {holder.get('pid', '?')} on "
            f"{holder.get('host', '?')}, since {holder.get('started', '?')})")


def this_program() -> str:
    """How the user knows this process: ``oste update``, ``OSTE Studio``, else the script's name."""
    name = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else "python"
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    module = spec.name if spec is not None else ""
    if module == "oste_core.cli" or name == "oste":
        return " ".join(["oste", *[a for a in sys.argv[1:] if not a.startswith("-")][:1]])
    if module.startswith("app.") or name == "oste-gui":
        return "OSTE Studio"
    return name


def _process_start(pid: int) -> str | None:
    """The start time of a process in clock ticks (Linux), to tell a reused pid from the lock's writer."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _read_record(path: Path) -> dict:
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def record_is_stale(record: dict) -> bool:
    """True when the record's process is gone: its pid is dead on this host (or reused by another process)."""
    if not record or record.get("host") != socket.gethostname():
        return not record  # an empty record is stale; another host's is not ours to judge
    pid = int(record.get("pid", 0))
    if not pid_alive(pid):
        return True
    start = _process_start(pid)
    return start is not None and record.get("pid_start") not in (None, start)


class FolderLock:
    """Hold ``folder``'s lock (the folder must exist) while writing it: ``with FolderLock(run_dir, "oste train"):``.

    ``acquire`` raises `FolderLockedError` when another live process holds it; ``stale`` is then the record
    of a dead writer whose lock was taken over (None when there was none).
    """

    def __init__(self, folder: str | Path, command: str | None = None) -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_FILE
        self.command = command or this_program()
        self.stale: dict | None = None
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> "FolderLock":
        if self._fd is not None:
            return self
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
            except PermissionError:  # another user's lock file: removable (by the folder's writers) once stale
                if not self.path.exists():
                    raise  # the folder itself is not writable
                record = _read_record(self.path)
                if not record_is_stale(record):
                    raise FolderLockedError(self.folder, record, self.path) from None
                self.path.unlink()
                continue
            try:
                flocked = self._flock(fd)
                if flocked is False or not self._same_file(fd):
                    record = _read_record(self.path)
                    if flocked is False:
                        raise FolderLockedError(self.folder, record, self.path)
                    continue  # the holder released (and removed) the file meanwhile: lock the new one
                record = _read_record(self.path)
                if record and not record_is_stale(record) and flocked is None:
                    raise FolderLockedError(self.folder, record, self.path)  # no flock here: trust the record
                self.stale = record or None
                self._write_record(fd)
            except BaseException:
                os.close(fd)
                raise
            self._fd = fd
            return self

    def release(self) -> None:
        """Remove the lock file and drop the lock (idempotent)."""
        if self._fd is None:
            return
        try:
            if self._same_file(self._fd):
                self.path.unlink(missing_ok=True)
        finally:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "FolderLock":
        return self.acquire()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.release()

    @staticmethod
    def _flock(fd: int) -> bool | None:
        """True: locked; False: another process holds it; None: this file system has no flock."""
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                return False
            if exc.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.EINVAL):
                return None
            raise
        return True

    def _same_file(self, fd: int) -> bool:
        try:
            return os.fstat(fd).st_ino == os.stat(self.path).st_ino
        except FileNotFoundError:
            return False

    def _write_record(self, fd: int) -> None:
        pid = os.getpid()
        record = {"pid": pid, "host": socket.gethostname(), "command": self.command,
                  "started": time.strftime("%Y-%m-%d %H:%M:%S"), "pid_start": _process_start(pid)}
        data = json.dumps(record).encode("utf-8")
        os.ftruncate(fd, 0)
        os.pwrite(fd, data, 0)
        os.fsync(fd)
