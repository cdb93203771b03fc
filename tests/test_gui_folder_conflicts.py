"""The window and a folder another program writes: read-only when another session holds the lock, reload or
keep mine when tags.csv changed on disk (pytest-qt, offscreen; the other session is a real process; the
user's click is QMessageBox.exec's answer)."""
from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import pytest  # noqa: E402
from PySide6.QtCore import QSettings  # noqa: E402
from PySide6.QtWidgets import QMessageBox  # noqa: E402

from app.main_window import MainWindow  # noqa: E402
from oste_core.utils.locks import LOCK_FILE  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
Button = QMessageBox.StandardButton
SESSION = ("import sys, time\nfrom oste_core.utils.locks import FolderLock\n"
           "FolderLock(sys.argv[1], 'OSTE Studio').acquire()\nprint('open', flush=True)\ntime.sleep(120)\n")


class Answers:
    """Answers the window's questions (`app.folder_conflicts.choose`) with one button; records their text."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, answer: Button) -> None:
        self.answer, self.asked = answer, []
        monkeypatch.setattr(QMessageBox, "exec", lambda box: self._exec(box))

    def _exec(self, box: QMessageBox) -> Button:
        self.asked.append(f"{box.windowTitle()}: {box.text()}")
        return self.answer


def tags_csv(root: Path) -> dict[str, str]:
    with open(root / "tags.csv", newline="", encoding="utf-8") as handle:
        return {row["image"]: row["tags"] for row in csv.DictReader(handle)}


def edit_by_hand(root: Path, rel: str, tags: str) -> None:
    """What a colleague's editor does: rewrite tags.csv with one row changed."""
    rows = tags_csv(root)
    rows[rel] = tags
    text = "image,tags\n" + "".join(f"{image},{value}\n" for image, value in rows.items())
    (root / "tags.csv").write_text(text + "\n", encoding="utf-8")


@pytest.fixture
def project_dir(demo_folder: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(demo_folder, tmp_path / "project"))


@pytest.fixture
def window(qtbot, tmp_path: Path):
    win = MainWindow(QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat))
    qtbot.addWidget(win)
    win.show()
    yield win
    win.close()


@pytest.fixture
def other_session(project_dir: Path):
    process = subprocess.Popen([sys.executable, "-c", SESSION, str(project_dir)], stdout=subprocess.PIPE, text=True,
                               env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert process.stdout.readline().strip() == "open"
    yield process
    process.kill()
    process.wait()


def test_a_folder_another_session_writes_is_offered_read_only(window, project_dir, other_session, monkeypatch):
    answers = Answers(monkeypatch, Button.Cancel)
    assert not window.folders.open_folder(project_dir)
    assert f"pid {other_session.pid}" in answers.asked[0] and "read-only" in answers.asked[0]
    assert not window.project.is_open()

    answers = Answers(monkeypatch, Button.Open)
    assert window.folders.open_folder(project_dir)
    assert window.project.read_only and window.windowTitle().endswith("(read-only)")
    before = (project_dir / "tags.csv").read_bytes()
    missing = next(c for c in window.project.class_names if c not in window.project.tags("demo_0000"))
    window.tags_panel.set_tag_checked(missing, True)
    assert (project_dir / "tags.csv").read_bytes() == before and missing not in window.tags_panel.tags()
    assert "read-only" in window.messages.error_box.text()
    window.canvas.document().mask[:4, :4] = 1
    window.canvas.document().dirty = True
    assert not window.editor.save("demo_0000") and not (project_dir / "verified").exists()
    window.training.start()
    assert not window.training.is_running() and "read-only" in window.messages.error_box.text()
    window.project.discard_document("demo_0000")


def test_a_killed_sessions_lock_does_not_lock_the_folder_out(window, project_dir, other_session, monkeypatch):
    other_session.kill()
    other_session.wait()
    assert (project_dir / LOCK_FILE).exists()
    answers = Answers(monkeypatch, Button.Cancel)
    assert window.folders.open_folder(project_dir) and not window.project.read_only and answers.asked == []


@pytest.mark.parametrize("answer", [Button.Yes, Button.No])
def test_tags_changed_on_disk_are_reloaded_or_replaced_as_the_user_chooses(window, project_dir, monkeypatch, answer):
    assert window.folders.open_folder(project_dir) and window.view.stem == "demo_0000"
    mine = window.project.tags("demo_0001")
    theirs = "star" if "star" not in mine else "ring"
    edit_by_hand(project_dir, "demo_0001.png", theirs)
    answers = Answers(monkeypatch, answer)
    missing = next(c for c in window.project.class_names if c not in window.project.tags("demo_0000"))
    window.tags_panel.set_tag_checked(missing, True)
    assert len(answers.asked) == 1 and "tags.csv changed on disk" in answers.asked[0]
    rows = tags_csv(project_dir)
    if answer == Button.Yes:  # reload: the file stays as edited; the window shows it; my click is not applied
        assert rows["demo_0001.png"] == theirs and missing not in rows["demo_0000.png"].split(";")
        assert window.project.tags("demo_0001") == [theirs]
        assert missing not in window.tags_panel.tags()
    else:  # keep mine: the window's tags, my click included, replace the file
        assert rows["demo_0001.png"].split(";") == mine and missing in rows["demo_0000.png"].split(";")
    missing_too = next(c for c in window.project.class_names if c not in window.project.tags("demo_0002"))
    window.project.set_tags("demo_0002", [missing_too])  # the next write needs no question
    assert len(answers.asked) == 1


def test_an_update_of_a_run_another_process_writes_fails_with_who_holds_it(window, project_dir, qtbot, monkeypatch):
    run = project_dir / "runs" / "20260101-100000"
    run.mkdir(parents=True)
    (run / "model.pt").write_bytes(b"the run being updated by oste update")  # finished, as far as the GUI can tell
    holder = subprocess.Popen([sys.executable, "-c", SESSION.replace("OSTE Studio", "oste update"), str(run)],
                              stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert holder.stdout.readline().strip() == "open"
        assert window.folders.open_folder(project_dir) and window.training_panel.selected_run() == run
        window.training.request_update()
        qtbot.waitUntil(lambda: not window.training.is_running(), timeout=120_000)
        text = window.messages.error_box.text()
        assert "in use by oste update" in text and f"pid {holder.pid}" in text
        assert (run / "model.pt").read_bytes() == b"the run being updated by oste update"
    finally:
        holder.kill()
        holder.wait()
