"""The README stays true to the product: its shortcut table and its run-folder table match the code."""
from __future__ import annotations

import os
import re
from pathlib import Path

from PySide6.QtCore import QSettings

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

ROOT = Path(__file__).resolve().parents[1]


def _table_after(text: str, heading: str) -> list[tuple[str, ...]]:
    """The rows of the first Markdown table after ``heading`` (header and separator left out)."""
    rows = []
    section = text[text.index(heading):]
    started = False
    for line in section.splitlines()[1:]:
        if line.startswith("|"):
            started = True
            rows.append(tuple(cell.strip() for cell in line.strip().strip("|").split("|")))
        elif started:
            break
    return rows[2:]


def test_readme_shortcut_table_is_the_help_sheet(qtbot, tmp_path: Path) -> None:
    from app.help_dialog import shortcut_rows
    from app.main_window import MainWindow

    window = MainWindow(QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat))
    qtbot.addWidget(window)
    expected = [(keys, action) for keys, action in shortcut_rows(window.menus.shortcut_actions())]
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert _table_after(readme, "### Keyboard shortcuts") == expected, \
        "README.md's shortcut table differs from Help > Keyboard shortcuts: paste the new table"


def test_readme_lists_every_run_folder_file() -> None:
    from oste_core.engine import feature_cache, run_folder

    names = [value for key, value in vars(run_folder).items() if key.isupper() and isinstance(value, str)]
    names.append(feature_cache.CACHE_DIR + "/")
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    listed = {row[0].strip("`") for row in _table_after(readme, "## Run folders")}
    assert set(names) <= listed, f"README.md's run-folder table misses {sorted(set(names) - listed)}"


def test_docs_links_resolve() -> None:
    for doc in [ROOT / "README.md", *(ROOT / "docs").glob("*.md")]:
        for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", doc.read_text(encoding="utf-8")):
            assert (doc.parent / target).exists(), f"{doc.name} links to missing {target}"
