"""Atomic writes: the mode an ordinary open() gives (or the replaced file's), and temp files a killed writer
leaves are recognised, skipped by readers and removed."""
from __future__ import annotations

import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from oste_core.config import OSTEConfig
from oste_core.data import load_mask, open_folder
from oste_core.engine.run_folder import RunFolder
from oste_core.export import export_masks
from oste_core.utils.io import atomic_write_text, file_signature, is_temp_file, remove_stale_temp_files

ROOT = Path(__file__).resolve().parents[1]


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def umask():
    """Set the process umask for one test (restored after)."""
    previous = os.umask(0o022)
    yield os.umask
    os.umask(previous)


@pytest.mark.parametrize("mask_bits", [0o022, 0o002, 0o077])
def test_a_new_file_gets_the_mode_open_would_give(tmp_path, umask, mask_bits):
    umask(mask_bits)
    atomic_write_text(tmp_path / "atomic.txt", "x")
    with open(tmp_path / "plain.txt", "w") as handle:
        handle.write("x")
    assert mode(tmp_path / "atomic.txt") == mode(tmp_path / "plain.txt") == 0o666 & ~mask_bits


def test_a_replaced_file_keeps_its_mode(tmp_path, umask):
    target = tmp_path / "shared.txt"
    target.write_text("old")
    for kept in (0o640, 0o664, 0o600):
        target.chmod(kept)
        atomic_write_text(target, "new")
        assert mode(target) == kept and target.read_text() == "new"


def test_exports_run_files_and_tags_are_readable_by_others(demo_folder, tmp_path, umask):
    folder = open_folder(shutil.copytree(demo_folder, tmp_path / "data"))
    folder.tags_path.unlink()  # a new tags.csv (a replaced one keeps its mode)
    items = [(s, load_mask(s.gt_mask)) for s in folder.samples[:3]]
    summary = export_masks(items, tmp_path / "out", folder.class_names, formats=("voc", "labelme", "cvat"))
    run = RunFolder(tmp_path / "run")
    run.save_config(OSTEConfig())
    run.save_weights("model.pt", {"model": {}})
    folder.save_tags()  # tags.csv, as the GUI saves it
    files = [*summary.written, run.file("config.yaml"), run.file("model.pt"), folder.tags_path]
    assert {path.name: oct(mode(path)) for path in files} == {path.name: "0o644" for path in files}


def test_a_killed_writers_temp_file_is_recognised_skipped_and_removed(demo_folder, tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "tags.csv").write_text("image,tags\na.png,circle\n")
    (folder / "a.png").write_bytes(open_folder(demo_folder).samples[0].image_path.read_bytes())
    writer = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom oste_core.utils.io import atomic_path\n"
         "with atomic_path(sys.argv[1]) as tmp:\n    tmp.write_bytes(b'half')\n    print(tmp, flush=True)\n"
         "    time.sleep(60)\n", str(folder / "b.png")],
        stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    temp = Path(writer.stdout.readline().strip())
    assert is_temp_file(temp) and temp.name.startswith(".")
    assert remove_stale_temp_files(folder) == []  # its writer is alive: left alone
    writer.send_signal(signal.SIGKILL)
    writer.wait()
    assert temp.exists() and not (folder / "b.png").exists()
    assert [s.rel for s in open_folder(folder).samples] == ["a.png"] and not open_folder(folder).untagged
    assert remove_stale_temp_files(folder) == [temp] and not temp.exists()


def test_temp_files_of_earlier_versions_are_removed_once_an_hour_old(tmp_path):
    old, fresh = tmp_path / ".cvat_segmentation_mask_1.1.zip.k2j9_x0a.tmp.zip", tmp_path / ".a.png.q8d7c6b5.tmp.png"
    for path in (old, fresh):
        path.write_bytes(b"PK")
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    assert is_temp_file(old) and is_temp_file(fresh) and not is_temp_file(tmp_path / ".hidden.png")
    assert remove_stale_temp_files(tmp_path) == [old] and fresh.exists()


def test_file_signature_changes_when_anyone_rewrites_the_file(tmp_path):
    path = tmp_path / "tags.csv"
    assert file_signature(path) is None
    atomic_write_text(path, "a")
    before = file_signature(path)
    atomic_write_text(path, "a")  # same content, new file
    assert file_signature(path) != before and path.read_text() == "a"
