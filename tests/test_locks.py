"""Folder locks: one writer per run folder and labelled folder, a clear message for the second, stale locks
of killed processes taken over (real subprocesses, real files)."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from oste_core.utils.locks import LOCK_FILE, FolderLock, FolderLockedError, _process_start, record_is_stale

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "QT_QPA_PLATFORM": "offscreen"}
HOLDER = ("import sys, time\nfrom oste_core.utils.locks import FolderLock\n"
          "FolderLock(sys.argv[1], 'oste update').acquire()\nprint('locked', flush=True)\ntime.sleep(120)\n")


@pytest.fixture
def holder(tmp_path):
    """Start a process that holds a folder's lock; yields (folder, process); killed at the end."""
    processes = []

    def start(folder: Path) -> subprocess.Popen:
        folder.mkdir(parents=True, exist_ok=True)
        process = subprocess.Popen([sys.executable, "-c", HOLDER, str(folder)], stdout=subprocess.PIPE, text=True,
                                   env=ENV)
        assert process.stdout.readline().strip() == "locked"
        processes.append(process)
        return process

    yield start
    for process in processes:
        process.kill()
        process.wait()


def test_a_second_writer_is_told_who_holds_the_folder(tmp_path, holder):
    process = holder(tmp_path / "run")
    with pytest.raises(FolderLockedError) as caught:
        FolderLock(tmp_path / "run", "oste train").acquire()
    message = str(caught.value)
    assert f"pid {process.pid}" in message and "oste update" in message and "since" in message
    assert caught.value.holder["pid"] == process.pid


def test_a_killed_writers_lock_is_stale_and_taken_over(tmp_path, holder):
    process = holder(tmp_path / "run")
    process.send_signal(signal.SIGKILL)
    process.wait()
    record = json.loads((tmp_path / "run" / LOCK_FILE).read_text())
    assert record["pid"] == process.pid  # the file stays behind ...
    with FolderLock(tmp_path / "run", "oste train") as lock:  # ... but the lock is stale
        assert lock.stale["pid"] == process.pid
        assert json.loads(lock.path.read_text())["pid"] == os.getpid()
    assert not (tmp_path / "run" / LOCK_FILE).exists()  # released: removed


def test_without_flock_the_record_decides(tmp_path):
    """Where the file system has no flock, a record is stale when its pid is gone on this host; another host's
    record is respected (its pid means nothing here)."""
    host = socket.gethostname()
    assert record_is_stale({"pid": 2**22 + 12345, "host": host})  # above Linux's pid_max: never alive
    assert not record_is_stale({"pid": os.getpid(), "host": host, "pid_start": _process_start(os.getpid())})
    assert record_is_stale({"pid": os.getpid(), "host": host, "pid_start": "1"})  # the pid was reused
    assert not record_is_stale({"pid": 2**22 + 12345, "host": "another-machine"})
    assert record_is_stale({})  # unreadable


def test_oste_update_on_a_run_another_process_writes_is_refused_clearly(tmp_path, holder, demo_folder):
    process = holder(tmp_path / "run")
    result = subprocess.run([sys.executable, "-m", "oste_core.cli", "update", str(tmp_path / "run"), str(demo_folder),
                             "--budget", "1", "--device", "cpu"], capture_output=True, text=True, env=ENV, cwd=ROOT,
                            timeout=300)
    assert result.returncode == 1
    assert "in use by oste update" in result.stderr and f"pid {process.pid}" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
