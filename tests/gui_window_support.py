"""What the main-window tests share: a real window on a temporary settings file, answers to its questions,
screen grabs, drags and a tiny training config."""
from __future__ import annotations

import csv
import os
import shutil
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from PySide6.QtCore import QSettings, Qt  # noqa: E402
from PySide6.QtGui import QImage  # noqa: E402
from PySide6.QtWidgets import QMessageBox  # noqa: E402

from app.main_window import MainWindow  # noqa: E402


TINY_TRAINING = {"train.crop": 64, "train.batch": 2, "train.workers": 0, "train.log_every": 1, "train.checkpoint_every": 2, "model.cam_scales": (1.0,),
                 "model.crf_backend": "torch", "model.crf_iters": 3, "loss.seg_warmup_iters": 0,
                 "model.suggestion_seg_weight": 0.5, "model.suggestion_gamma": 4.0}
Button = QMessageBox.StandardButton


def grab_array(widget) -> np.ndarray:
    image = widget.grab().toImage().convertToFormat(QImage.Format.Format_RGB888)
    width, height = image.width(), image.height()
    data = np.frombuffer(image.constBits(), np.uint8, count=image.bytesPerLine() * height)
    return data.reshape(height, image.bytesPerLine())[:, : 3 * width].reshape(height, width, 3).copy()


def tags_csv(root: Path) -> dict[str, list[str]]:
    with open(root / "tags.csv", newline="", encoding="utf-8") as handle:
        return {row["image"]: [t for t in row["tags"].split(";") if t] for row in csv.DictReader(handle)}


class Questions:
    """Answers QMessageBox.question with a fixed button and records what was asked."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, answer: QMessageBox.StandardButton) -> None:
        self.answer, self.asked = answer, []
        monkeypatch.setattr(QMessageBox, "question", self._question)

    def _question(self, _parent, title, text, buttons=Button.Yes | Button.No, _default=Button.NoButton):
        self.asked.append(f"{title}: {text}")
        return self.answer if buttons & self.answer else Button.Yes


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """One intra-op thread: on a busy 2-core machine OpenMP spinning makes tiny models crawl."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture
def project_dir(demo_folder: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(demo_folder, tmp_path / "project"))


@pytest.fixture
def window(qtbot, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> MainWindow:
    settings = QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat)
    win = MainWindow(settings)
    qtbot.addWidget(win)
    win.resize(1100, 760)
    win.show()
    qtbot.waitExposed(win)
    yield win
    Questions(monkeypatch, Button.Discard)  # closing: stop a training, drop unsaved test edits
    win.close()
    qtbot.waitUntil(lambda: not win.training.is_running(), timeout=300_000)  # a running training closes the window later


def drag(qtbot, canvas, start: tuple[float, float], end: tuple[float, float]) -> None:
    """A left-button drag between two image pixels."""
    a = canvas.to_widget(start[0] + 0.5, start[1] + 0.5).toPoint()
    b = canvas.to_widget(end[0] + 0.5, end[1] + 0.5).toPoint()
    qtbot.mousePress(canvas, Qt.MouseButton.LeftButton, pos=a)
    qtbot.mouseMove(canvas, b)
    qtbot.mouseRelease(canvas, Qt.MouseButton.LeftButton, pos=b)

