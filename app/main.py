"""``oste-gui [FOLDER]`` / ``oste-gui --demo``: start the desktop app.

Without a display (Linux with neither DISPLAY nor WAYLAND_DISPLAY and no QT_QPA_PLATFORM) the
command says so and runs the headless demo of the core instead.
"""
from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping
from pathlib import Path

ORGANIZATION = "OSTE"
APPLICATION = "OSTE Studio"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="oste-gui",
        description="OSTE Studio: pixel masks from image-level tags, with training, CAM inspection and editing.",
    )
    parser.add_argument("folder", nargs="?", type=Path,
                        help="labelled folder to open (native tags.csv, PASCAL VOC, or one subfolder per class)")
    parser.add_argument("--demo", action="store_true",
                        help="create the synthetic demo project in the user data folder (once) and open it")
    return parser


def display_available(env: Mapping[str, str] = os.environ, platform: str = sys.platform) -> bool:
    """False only on Linux/BSD without DISPLAY, WAYLAND_DISPLAY and QT_QPA_PLATFORM."""
    if not platform.startswith(("linux", "freebsd", "openbsd")):
        return True
    return any(env.get(name) for name in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM"))


def headless_output_dir() -> Path:
    """Where the headless demo writes: ``<user data folder>/headless-demo``."""
    from PySide6.QtCore import QCoreApplication, QStandardPaths

    QCoreApplication.setOrganizationName(ORGANIZATION)
    QCoreApplication.setApplicationName(APPLICATION)
    base = QStandardPaths.writableLocation(QStandardPaths.StandardLocation.AppDataLocation)
    return Path(base) / "headless-demo"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not display_available():
        from oste_core.cli import run_headless_demo

        out_dir = headless_output_dir()
        print("oste-gui: no display found (DISPLAY / WAYLAND_DISPLAY are not set, nor QT_QPA_PLATFORM); "
              f"running the headless demo instead, results in {out_dir}", file=sys.stderr)
        return run_headless_demo(out_dir)

    from PySide6.QtCore import QSettings
    from PySide6.QtWidgets import QApplication

    from app.main_window import MainWindow

    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setOrganizationName(ORGANIZATION)
    app.setApplicationName(APPLICATION)
    window = MainWindow(QSettings())
    window.show()
    if args.demo:
        window.open_demo()
    elif args.folder is not None:
        window.open_folder(args.folder)
    else:
        last = window.settings.value("lastFolder")
        if last and Path(str(last)).is_dir():
            window.open_folder(str(last))
    return app.exec()


if __name__ == "__main__":
    sys.exit(main())
