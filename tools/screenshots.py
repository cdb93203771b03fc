"""Save PNG screenshots of the OSTE Studio main window in each state to ``screenshots/``.

States: empty, project open, training running, each layer, editing, export dialog, the help
sheet (shortcuts and layer legend) and the whole window at 1366x768 (a small laptop screen).
Runs offscreen on a temporary demo project (nothing in the user's settings or data folder is
touched). It trains a small real model for ``--iters`` iterations; the layer screenshots use that
run, or ``--run`` (a run folder trained on demo data, e.g. ``oste train`` with a few hundred
iterations), which makes the CAMs worth looking at when this machine has no time to train one.

    python tools/screenshots.py [--out screenshots] [--iters 120] [--run runs/demo]

``--readme docs/main_window.png`` instead writes the README's one picture: the main window with the
enhanced CAM of "cat" over a photo. The photos are scikit-image's bundled sample images (public
domain or freely licensed, so the PNG may be redistributed: chelsea, coffee, astronaut, rocket),
a few flipped and cropped copies of each, trained in the fast mode for ``--iters`` iterations.

    python tools/screenshots.py --readme docs/main_window.png --iters 30
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from PySide6.QtCore import QPointF, QSettings, Qt  # noqa: E402
from PySide6.QtGui import QMouseEvent  # noqa: E402
from PySide6.QtWidgets import QApplication, QWidget  # noqa: E402

from app.canvas import Tool  # noqa: E402
from app.help_dialog import LEGEND_TAB, SHORTCUTS_TAB  # noqa: E402
from app.layers_dock import LAYERS  # noqa: E402
from app.main_window import MainWindow  # noqa: E402
from oste_core.data import write_demo_data  # noqa: E402


def wait_until(app: QApplication, condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    """Run the event loop until ``condition()`` holds; fail with ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        app.processEvents()
        time.sleep(0.02)
    app.processEvents()


def save(widget: QWidget, out: Path, name: str) -> Path:
    QApplication.processEvents()
    path = out / f"{name}.png"
    widget.grab().save(str(path))
    print(f"wrote {path}")
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("screenshots"))
    parser.add_argument("--iters", type=int, default=120, help="training iterations of the demo model")
    parser.add_argument("--run", type=Path, help="an already trained demo run to show in the layer screenshots")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a further training setting, e.g. --set train.freeze_backbone=true (repeatable)")
    parser.add_argument("--readme", type=Path, metavar="PNG",
                        help="write only the README's main-window picture (sample photos, CAM layer) to PNG")
    args = parser.parse_args(argv)
    app = QApplication.instance() or QApplication([])
    if args.readme is not None:
        return readme_picture(app, args.readme, args.iters, args.set)
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="oste-screens-") as tmp:
        tmp_dir = Path(tmp)
        data = write_demo_data(tmp_dir / "demo", n=24, size=128)
        given_run = None
        if args.run is not None:
            given_run = Path(shutil.copytree(args.run, data / "runs" / "given-demo-run"))
        settings = QSettings(str(tmp_dir / "settings.ini"), QSettings.Format.IniFormat)
        window = MainWindow(settings)
        window.resize(1440, 900)
        window.show()
        save(window, args.out, "01_empty")

        window.open_folder(data)
        save(window, args.out, "02_project_open")

        panel = window.training_panel
        panel.iters.setValue(args.iters)
        panel.batch.setValue(4)
        panel.crop.setValue(96)
        panel.device.setCurrentText("cpu")
        panel.set_extra_overrides({"train.workers": 0, "train.log_every": 2, "model.cam_scales": (1.0,),
                                   "model.crf_backend": "torch", "model.crf_iters": 3, "train.lr": 0.02,
                                   **dict(item.split("=", 1) for item in args.set)})
        finished: list[str] = []
        window.trainingFinished.connect(finished.append)
        window.start_training()
        points = max(min(args.iters // 3, 20), 2)
        wait_until(app, lambda: len(panel.plot.series().get("total", [])) >= points, 900, "training progress")
        save(window, args.out, "03_training_running")
        if given_run is not None:
            window.stop_training()
        wait_until(app, lambda: bool(finished), 3600, "the end of training")
        if not finished[0]:
            raise RuntimeError("training failed; see the log panel")
        if given_run is not None:
            panel.runs.setCurrentIndex(panel.runs.findData(str(given_run)))
        window.image_list.select_stem("demo_0003")
        wait_until(app, lambda: window.project.prediction(window.current_stem()) is not None, 300, "inference")
        for number, (key, _title) in enumerate(LAYERS, start=1):
            window.layers_panel.set_layer_number(number)
            save(window, args.out, f"04_layer{number}_{key}")

        window.resize(1366, 768)
        window.layers_panel.set_layer("suggestion")
        save(window, args.out, "07_window_1366x768")
        window.resize(1440, 900)
        help_dialog = window.show_help(SHORTCUTS_TAB)
        save(help_dialog, args.out, "08_help_shortcuts")
        help_dialog.show_tab(LEGEND_TAB)
        save(help_dialog, args.out, "09_help_legend")
        help_dialog.close()

        window.layers_panel.set_layer_number(1)
        window.editor.accept_suggestion()
        canvas = window.canvas
        window.edit_toolbar.set_tool(Tool.BRUSH)
        window.edit_toolbar.set_radius(4)
        doc = canvas.document()
        doc.brush([(10, 100), (60, 110)], 4, 1)
        canvas.refresh_mask()
        canvas.maskEdited.emit()
        window.edit_toolbar.set_tool(Tool.POLYGON)
        for x, y in ((80, 20), (120, 25), (110, 60)):
            canvas.mousePressEvent(_click(canvas, x, y))
        save(window, args.out, "05_editing")
        canvas.cancel_polygon()
        window.editor.save_current()

        dialog = window.show_export_dialog()
        dialog.target.setText(str(tmp_dir / "export"))
        for box in dialog.format_boxes.values():
            box.setChecked(True)
        dialog.start()
        wait_until(app, lambda: not dialog.is_running(), 600, "the export")
        save(dialog, args.out, "06_export_dialog")
        dialog.close()
        window.close()
    return 0


# scikit-image sample photos we may redistribute (see skimage.data's licence notes), one class each.
SAMPLE_PHOTOS = {"chelsea": "cat", "coffee": "cup", "astronaut": "person", "rocket": "rocket"}


def write_sample_photos(root: Path) -> Path:
    """A native-layout folder of scikit-image sample photos: each photo, its mirror image and two crops."""
    import cv2
    import skimage.data

    images = root / "images"
    images.mkdir(parents=True)
    rows = ["image,tags"]
    for name, tag in SAMPLE_PHOTOS.items():
        rgb = getattr(skimage.data, name)()
        h, w = rgb.shape[:2]
        variants = {"": rgb, "_flip": rgb[:, ::-1], "_crop_a": rgb[: int(h * 0.85), : int(w * 0.85)],
                    "_crop_b": rgb[int(h * 0.15):, int(w * 0.15):]}
        for suffix, variant in variants.items():
            file = f"{name}{suffix}.jpg"
            cv2.imwrite(str(images / file), np.ascontiguousarray(variant[..., ::-1]), [cv2.IMWRITE_JPEG_QUALITY, 92])
            rows.append(f"images/{file},{tag}")
    (root / "tags.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    (root / "classes.txt").write_text("\n".join(SAMPLE_PHOTOS.values()) + "\n", encoding="utf-8")
    return root


def readme_picture(app: QApplication, target: Path, iters: int, extra: list[str]) -> int:
    """Train briefly on the sample photos and save the window with the cat's enhanced CAM (< 300 KB)."""
    from PIL import Image

    with tempfile.TemporaryDirectory(prefix="oste-readme-") as tmp:
        tmp_dir = Path(tmp)
        data = write_sample_photos(tmp_dir / "photos")
        settings = QSettings(str(tmp_dir / "settings.ini"), QSettings.Format.IniFormat)
        window = MainWindow(settings)
        window.resize(1280, 800)
        window.show()
        window.open_folder(data)
        panel = window.training_panel
        panel.iters.setValue(iters)
        panel.batch.setValue(4)
        panel.crop.setValue(160)
        panel.device.setCurrentText("cpu")
        panel.set_extra_overrides({"train.workers": 0, "train.log_every": 1, "model.cam_scales": (1.0,),
                                   "train.freeze_backbone": True,
                                   **dict(item.split("=", 1) for item in extra)})
        finished: list[str] = []
        window.trainingFinished.connect(finished.append)
        window.start_training()
        wait_until(app, lambda: bool(finished), 1800, "the end of training")
        if not finished[0]:
            raise RuntimeError("training failed; see the log panel")
        window.image_list.select_stem("chelsea")
        wait_until(app, lambda: window.project.prediction(window.current_stem()) is not None, 300, "inference")
        window.layers_panel.set_layer("enhanced_cam")
        window.layers_panel.set_cam_class(list(SAMPLE_PHOTOS.values()).index("cat") + 1)
        window.layers_panel.set_opacity(0.5)
        app.processEvents()
        shot = tmp_dir / "window.png"
        save(window, tmp_dir, "window")
        image = Image.open(shot).convert("RGB")
        image = image.resize((1024, round(image.height * 1024 / image.width)), Image.LANCZOS)
        target.parent.mkdir(parents=True, exist_ok=True)
        image.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(
            target, optimize=True)
        print(f"wrote {target} ({target.stat().st_size // 1024} KB)")
        window.close()
    return 0


def _click(canvas, x: float, y: float):
    """A left-button press at image pixel (x, y)."""
    pos = canvas.to_widget(x + 0.5, y + 0.5)
    return QMouseEvent(QMouseEvent.Type.MouseButtonPress, QPointF(pos), QPointF(pos),
                       Qt.MouseButton.LeftButton, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier)


if __name__ == "__main__":
    sys.exit(main())
