"""``oste-gui [FOLDER]`` / ``oste-gui --demo``: start the desktop app.

Without a display (Linux with neither DISPLAY nor WAYLAND_DISPLAY and no QT_QPA_PLATFORM) the
command says so and runs the headless demo of the core instead. When Qt's X11 ('xcb') platform
plugin would be used, the system libraries it needs are checked first: Qt aborts the process
("Could not load the Qt platform plugin xcb") when one is missing, so the command names the
Debian/Ubuntu packages to install instead, then runs the headless demo for ``--demo`` or exits.
Any other fatal platform-plugin error is caught by a Qt message handler and explained the same way.
"""
from __future__ import annotations

import argparse
import ctypes
import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path

ORGANIZATION = "OSTE"
APPLICATION = "OSTE Studio"
EXIT_NO_PLATFORM = 3

# The shared libraries Qt 6's xcb plugin (libqxcb.so -> libQt6XcbQpa.so) loads, with the
# Debian/Ubuntu package of each (Qt 6.5+ added libxcb-cursor0).
XCB_LIBRARIES: dict[str, str] = {
    "libxcb.so.1": "libxcb1",
    "libX11.so.6": "libx11-6",
    "libX11-xcb.so.1": "libx11-xcb1",
    "libxcb-cursor.so.0": "libxcb-cursor0",
    "libxcb-icccm.so.4": "libxcb-icccm4",
    "libxcb-keysyms.so.1": "libxcb-keysyms1",
    "libxcb-image.so.0": "libxcb-image0",
    "libxcb-randr.so.0": "libxcb-randr0",
    "libxcb-render.so.0": "libxcb-render0",
    "libxcb-render-util.so.0": "libxcb-render-util0",
    "libxcb-shape.so.0": "libxcb-shape0",
    "libxcb-shm.so.0": "libxcb-shm0",
    "libxcb-sync.so.1": "libxcb-sync1",
    "libxcb-util.so.1": "libxcb-util1",
    "libxcb-xfixes.so.0": "libxcb-xfixes0",
    "libxcb-xkb.so.1": "libxcb-xkb1",
    "libxkbcommon.so.0": "libxkbcommon0",
    "libxkbcommon-x11.so.0": "libxkbcommon-x11-0",
    "libfontconfig.so.1": "libfontconfig1",
    "libfreetype.so.6": "libfreetype6",
}


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


def uses_xcb(env: Mapping[str, str] = os.environ, platform: str = sys.platform) -> bool:
    """True when Qt will pick its X11 plugin: Linux with DISPLAY, and QT_QPA_PLATFORM unset or xcb."""
    if not platform.startswith("linux"):
        return False
    requested = env.get("QT_QPA_PLATFORM", "").split(":")[0].strip()
    if requested:
        return requested == "xcb"
    return bool(env.get("DISPLAY")) and not env.get("WAYLAND_DISPLAY")


def _loadable(soname: str) -> bool:
    try:
        ctypes.CDLL(soname)
    except OSError:
        return False
    return True


def missing_xcb_packages(libraries: Mapping[str, str] = XCB_LIBRARIES,
                         loadable: Callable[[str], bool] = _loadable) -> list[str]:
    """Debian/Ubuntu packages of the xcb plugin's libraries that cannot be loaded here."""
    return sorted({package for soname, package in libraries.items() if not loadable(soname)})


def platform_help(missing: list[str], plugin: str = "xcb") -> str:
    """What to tell the user when Qt cannot start its display plugin (``missing``: packages known missing)."""
    packages = missing or sorted(set(XCB_LIBRARIES.values()))
    which = ("these system libraries are missing" if missing
             else "the display could not be opened, or a system library is missing; X11 needs these")
    return (f"oste-gui: Qt cannot start its '{plugin}' display plugin: {which}.\n"
            f"  Debian/Ubuntu: sudo apt install {' '.join(packages)}\n"
            "  Fedora: sudo dnf install xcb-util-cursor xcb-util-wm xcb-util-keysyms libxkbcommon-x11\n"
            "  Without a screen: unset DISPLAY to run the headless demo, or set QT_QPA_PLATFORM=offscreen.")


def _install_fatal_handler() -> None:
    """Explain a fatal platform-plugin error (Qt aborts right after its message) instead of a bare abort."""
    from PySide6.QtCore import QtMsgType, qInstallMessageHandler

    previous: list = []

    def handler(kind: QtMsgType, context, message: str) -> None:
        if kind == QtMsgType.QtFatalMsg and "platform plugin" in message:
            print(message, file=sys.stderr)
            plugin = os.environ.get("QT_QPA_PLATFORM", "").split(":")[0] or "xcb"
            print(platform_help(missing_xcb_packages() if uses_xcb() else [], plugin), file=sys.stderr)
            sys.stderr.flush()
            os._exit(EXIT_NO_PLATFORM)
        if previous and previous[0] is not None:
            previous[0](kind, context, message)
        else:
            print(message, file=sys.stderr)

    previous.append(qInstallMessageHandler(handler))


def headless_output_dir() -> Path:
    """Where the headless demo writes: ``<user data folder>/headless-demo``."""
    from PySide6.QtCore import QCoreApplication, QStandardPaths

    QCoreApplication.setOrganizationName(ORGANIZATION)
    QCoreApplication.setApplicationName(APPLICATION)
    base = QStandardPaths.writableLocation(QStandardPaths.StandardLocation.AppDataLocation)
    return Path(base) / "headless-demo"


def run_headless(why: str) -> int:
    from oste_core.cli import run_headless_demo

    out_dir = headless_output_dir()
    print(f"oste-gui: {why}; running the headless demo instead, results in {out_dir}", file=sys.stderr)
    return run_headless_demo(out_dir)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not display_available():
        return run_headless("no display found (DISPLAY / WAYLAND_DISPLAY are not set, nor QT_QPA_PLATFORM)")
    if uses_xcb():
        missing = missing_xcb_packages()
        if missing:
            print(platform_help(missing), file=sys.stderr)
            return run_headless("the display cannot be used") if args.demo else EXIT_NO_PLATFORM

    from PySide6.QtCore import QSettings
    from PySide6.QtWidgets import QApplication

    from app.main_window import MainWindow
    from app.style import app_icon

    _install_fatal_handler()
    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setOrganizationName(ORGANIZATION)
    app.setApplicationName(APPLICATION)
    app.setDesktopFileName("oste-studio")  # Wayland: match resources/oste-studio.desktop
    app.setWindowIcon(app_icon())
    window = MainWindow(QSettings())
    window.show()
    if args.demo:
        window.folders.open_demo()
    elif args.folder is not None:
        window.folders.open_folder(args.folder)
    else:
        last = window.settings.value("lastFolder")
        if last and Path(str(last)).is_dir():
            window.folders.open_folder(str(last))
    return app.exec()


if __name__ == "__main__":
    sys.exit(main())
