"""The GUI's images not tagged yet, suggested tags (T accepts, R rejects, the bulk dialog, review order) and the
Tags panel's ImageNet list (priors.yaml), on real widgets offscreen."""
from __future__ import annotations

import csv
import os
import shutil
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import pytest  # noqa: E402
from PySide6.QtCore import QSettings, Qt  # noqa: E402
from PySide6.QtWidgets import QMessageBox  # noqa: E402

from app.imagenet_dialog import ImagenetDialog  # noqa: E402
from app.main_window import MainWindow  # noqa: E402
from oste_core.data.priors import read_priors  # noqa: E402
from oste_core.engine.tag_suggestions import SUGGESTIONS_FILE, SuggestedTag, load_suggestions, save_suggestions  # noqa: E402

UNTAGGED = ("demo_0009.png", "demo_0010.png", "demo_0011.png")


def tag_rows(root: Path) -> dict[str, str]:
    with open(root / "tags.csv", newline="", encoding="utf-8") as handle:
        return {row["image"]: row["tags"] for row in csv.DictReader(handle)}


def _tags(**probabilities: float) -> list[SuggestedTag]:
    return sorted((SuggestedTag(n, p, p) for n, p in probabilities.items()), key=lambda t: -t.probability)


@pytest.fixture
def project_dir(demo_folder: Path, tmp_path: Path) -> Path:
    """The demo folder with its last three images not tagged yet, and a run folder with their suggestions."""
    root = Path(shutil.copytree(demo_folder, tmp_path / "project"))
    rows = tag_rows(root)
    with open(root / "tags.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image", "tags"])
        writer.writerows([rel, "?" if rel in UNTAGGED else tags] for rel, tags in rows.items())
    run = root / "runs" / "run-1"
    run.mkdir(parents=True)
    save_suggestions(run / SUGGESTIONS_FILE, {
        UNTAGGED[0]: _tags(circle=0.97, square=0.02, star=0.93),  # sure
        UNTAGGED[1]: _tags(circle=0.6, square=0.03),  # unsure about circle
        UNTAGGED[2]: _tags(circle=0.04, square=0.01),  # sure: background only
    })
    return root


@pytest.fixture
def window(qtbot, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> MainWindow:
    settings = QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat)
    win = MainWindow(settings)
    qtbot.addWidget(win)
    win.show()
    qtbot.waitExposed(win)
    yield win
    monkeypatch.setattr(QMessageBox, "question", lambda *args, **kwargs: QMessageBox.StandardButton.Discard)
    win.close()


def test_images_not_tagged_yet_are_told_apart_and_filtered(window: MainWindow, project_dir: Path) -> None:
    assert window.folders.open_folder(project_dir)
    listed = window.image_list
    assert "3 not tagged yet" in listed.counts.text()
    assert listed.list.findItems("demo_0009.png  (not tagged yet)", Qt.MatchFlag.MatchStartsWith)
    listed.status_filter.setCurrentIndex(listed.status_filter.findData("not tagged"))
    assert listed.visible_stems() == ["demo_0009", "demo_0010", "demo_0011"]
    listed.select_stem("demo_0010")
    assert "Not tagged yet" in window.tags_panel._suggested.text() and not window.tags_panel.accept_button.isVisible()


def test_t_accepts_and_r_rejects_the_shown_suggestion(window: MainWindow, project_dir: Path) -> None:
    window.folders.open_folder(project_dir)
    window.suggested_tags.load(str(project_dir / "runs" / "run-1"))
    window.image_list.select_stem("demo_0009")
    panel = window.tags_panel
    assert panel.accept_button.isVisible() and panel.suggested() == ["circle", "star"]
    italic = {panel._list.item(row).text(): panel._list.item(row).font().italic() for row in range(panel._list.count())}
    assert italic["circle"] and italic["star"] and not italic["square"]
    window.menus.accept_tags_action.trigger()  # T
    assert tag_rows(project_dir)["demo_0009.png"] == "circle;star"
    assert window.project.is_tagged("demo_0009") and not panel.accept_button.isVisible()
    assert panel.tags() == ["circle", "star"]
    window.image_list.select_stem("demo_0010")
    window.menus.reject_tags_action.trigger()  # R
    assert tag_rows(project_dir)["demo_0010.png"] == "?" and not window.project.is_tagged("demo_0010")
    assert not panel.accept_button.isVisible()
    assert "demo_0010.png" not in load_suggestions(project_dir / "runs" / "run-1" / SUGGESTIONS_FILE)


def test_accept_suggested_tags_tags_the_sure_images_and_review_puts_the_unsure_first(
        window: MainWindow, project_dir: Path) -> None:
    window.folders.open_folder(project_dir)
    window.suggested_tags.load(str(project_dir / "runs" / "run-1"))
    window.suggested_tags.review()
    assert window.image_list.visible_stems()[0] == "demo_0010"  # the circle at 0.6: the most uncertain
    dialog = window.suggested_tags.accept_many()
    dialog.scope.setCurrentIndex(dialog.scope.findData("all"))
    dialog.threshold.setValue(0.9)
    assert dialog.summary.text().startswith("2 of 3 images not tagged yet would be tagged; 1 left for review")
    dialog.threshold.setValue(0.5)
    assert dialog.summary.text().startswith("3 of 3")
    dialog.threshold.setValue(0.9)
    dialog.accept()
    rows = tag_rows(project_dir)
    assert rows["demo_0009.png"] == "circle;star" and rows["demo_0011.png"] == "" and rows["demo_0010.png"] == "?"
    assert window.project.folder.untagged == ["demo_0010.png"]


def test_the_imagenet_list_of_a_class_is_searchable_and_saves_priors_yaml(window: MainWindow, project_dir: Path,
                                                                         qtbot) -> None:
    window.folders.open_folder(project_dir)
    (project_dir / "priors.yaml").unlink()
    window.tags_panel._list.setCurrentRow(0)
    name = window.tags_panel._list.currentItem().text()
    with qtbot.waitSignal(window.tags_panel.imagenetRequested):
        window.tags_panel._imagenet_button.click()
    dialog = window.findChild(ImagenetDialog)
    assert dialog is not None and dialog.source.text().startswith("Now: 0 ImageNet classes")
    dialog.search.setText("tabby")
    shown = [dialog.list.item(r).text() for r in range(dialog.list.count()) if not dialog.list.item(r).isHidden()]
    assert shown == ["281: tabby, tabby cat"]
    for index in dialog.ticked():
        dialog.set_ticked(index, False)
    dialog.set_ticked(281, True)
    dialog.accept()
    assert read_priors(project_dir, window.project.class_names) == {name: (281,)}


def test_ticking_a_class_of_an_image_with_a_suggestion_tags_it_and_hides_the_suggestion(
        window: MainWindow, project_dir: Path, qtbot) -> None:
    window.folders.open_folder(project_dir)
    window.suggested_tags.load(str(project_dir / "runs" / "run-1"))
    window.image_list.select_stem("demo_0011")
    assert window.tags_panel.accept_button.isVisible() and window.tags_panel.suggested() == []
    window.tags_panel.set_tag_checked("square", True)  # as a click: inside the item's own itemChanged
    qtbot.waitUntil(lambda: not window.tags_panel.accept_button.isVisible())
    assert tag_rows(project_dir)["demo_0011.png"] == "square" and window.tags_panel.tags() == ["square"]
