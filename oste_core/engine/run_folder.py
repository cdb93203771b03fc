"""A run folder: every file a training run writes, and the one place that reads and writes them.

| file | what |
| --- | --- |
| ``config.yaml`` | the full `OSTEConfig` of the run (reloaded by resume, updates and the predictor) |
| ``classes.txt`` | the class names, one per line, index 1..K |
| ``versions.json`` | Python, torch, OpenCV, ... versions (reproducibility) |
| ``data.json`` | the labelled folder trained on, its layout and image count |
| ``problems.txt`` | images skipped and other folder problems |
| ``metrics.jsonl`` | one JSON line per progress report: iteration, lr, losses, images/s |
| ``checkpoint.pt`` | latest weights + optimizer state (resume); deleted once ``model.pt`` is saved |
| ``model.pt`` | final weights, config and classes (what the predictor loads) |
| ``features/`` | the fast mode's cached backbone features (``feature_cache.py``) |

Writes are atomic (temp file + rename): a crash never leaves half a file, and the temp files a killed
process leaves are removed when the run is next written (`remove_stale_temps`). While a training or an
update writes the run, it holds the folder's lock (``.oste.lock``, `oste_core.utils.locks`). A file that is
damaged anyway (a failing disk, a copy cut short) is reported with what to do (`damaged_message`).
"""
from __future__ import annotations

import errno
import json
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch
import yaml

from oste_core.config import OSTEConfig
from oste_core.utils.disk import DiskFullError, format_bytes, free_bytes
from oste_core.utils.io import atomic_path, atomic_write_text, folder_size, is_disk_full, remove_stale_temp_files

CONFIG = "config.yaml"
CLASSES = "classes.txt"
VERSIONS = "versions.json"
DATA = "data.json"
PROBLEMS = "problems.txt"
METRICS = "metrics.jsonl"
CHECKPOINT = "checkpoint.pt"
FINAL_MODEL = "model.pt"


class RunError(RuntimeError):
    """A run folder that cannot be loaded; the message names the file and the problem."""


class _RecordingWriter:
    """A binary file that keeps the OSError of a failed write (``torch.save`` turns it into an opaque RuntimeError)."""

    def __init__(self, handle) -> None:
        self.handle, self.error = handle, None

    def write(self, data: bytes) -> int:
        try:
            return self.handle.write(data)
        except OSError as exc:
            self.error = exc
            raise

    def flush(self) -> None:
        self.handle.flush()


def save_torch_file(path: Path, payload: Any) -> None:
    """``torch.save`` atomically; a full disk raises its OSError (ENOSPC), not torch's "unexpected pos"."""
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        writer = _RecordingWriter(handle)
        try:
            torch.save(payload, writer)
        except RuntimeError:
            if writer.error is not None:
                raise writer.error from None
            raise


def looks_damaged(exc: BaseException) -> bool:
    """True for what ``torch.load`` raises on a truncated or garbled file ("internal miniz error", ...)."""
    if isinstance(exc, (EOFError, pickle.UnpicklingError, zipfile.BadZipFile)):
        return True
    if isinstance(exc, OSError):
        return exc.errno == errno.EINVAL
    text = str(exc)
    return isinstance(exc, RuntimeError) and any(m in text for m in ("zip archive", "miniz", "PytorchStreamReader"))


def damaged_message(path: Path, reason: str) -> str:
    """``path`` is damaged or incomplete: what happened and what to do, per run file."""
    run = path.parent
    if path.name == FINAL_MODEL and (run / CHECKPOINT).is_file():
        action = (f"delete it and resume the run (oste train DATA --out {run} --resume, or Resume in the GUI) to "
                  f"save it again from {CHECKPOINT} (updates made since the training ended are lost)")
    elif path.name == FINAL_MODEL:
        action = (f"delete it and train the run again (oste train DATA --out {run} --resume, or Resume in the GUI: "
                  "the cached features are reused)")
    elif path.name == CHECKPOINT:
        action = f"delete it: --resume then starts the run again from iteration 0 ({FINAL_MODEL}, if any, is not affected)"
    elif path.name == CONFIG:
        action = f"delete it: the run's settings are then read back from {FINAL_MODEL} or {CHECKPOINT}"
    else:
        action = "delete it; it is rebuilt"
    return f"{path}: this file is damaged or incomplete ({reason}), e.g. by a disk failure or a copy cut short; {action}"


class RunFolder:
    """Reads and writes the files of one run folder (see the module docstring)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def file(self, name: str) -> Path:
        return self.path / name

    # ------------------------------------------------------------ weights
    def has_weights(self) -> bool:
        """True once training saved anything loadable (a checkpoint or the final model)."""
        return self.file(FINAL_MODEL).is_file() or self.file(CHECKPOINT).is_file()

    def is_finished(self) -> bool:
        """True when the final model exists (training ended, or an update saved it)."""
        return self.file(FINAL_MODEL).is_file()

    def weights_file(self) -> Path:
        """The final model, or the latest checkpoint of a stopped run."""
        for name in (FINAL_MODEL, CHECKPOINT):
            if self.file(name).exists():
                return self.file(name)
        raise RunError(f"{self.path}: no {FINAL_MODEL} or {CHECKPOINT} (is this a run folder, and did training start?)")

    def save_weights(self, name: str, payload: dict) -> Path:
        """torch.save through a temp file + rename; `DiskFullError` (the old file unchanged) on a full disk."""
        self.path.mkdir(parents=True, exist_ok=True)
        try:
            save_torch_file(self.file(name), payload)
        except OSError as exc:
            if not is_disk_full(exc):
                raise
            raise DiskFullError(f"{self.file(name)}: the disk is full ({format_bytes(free_bytes(self.path))} free); "
                                f"the previous {name} is unchanged: free some space, then resume the run") from exc
        return self.file(name)

    @staticmethod
    def load_weights(path: Path, device: torch.device | str = "cpu") -> dict:
        """A saved weights file (model state, config, classes, iteration, ...); ``RunError`` if unreadable."""
        try:
            return torch.load(path, map_location=device, weights_only=False)
        except Exception as exc:  # noqa: BLE001 - one clear message for any unreadable file
            if looks_damaged(exc):
                reason = str(exc).split(". This is an internal miniz error")[0] or type(exc).__name__
                raise RunError(damaged_message(path, reason)) from exc
            raise RunError(f"{path}: cannot read this model file ({exc})") from exc

    def remove_stale_temps(self) -> list[Path]:
        """Delete the temp files killed writers left in the run folder and its feature cache."""
        return remove_stale_temp_files(self.path, recursive=True)

    def disk_usage(self) -> str:
        """The run folder's size on disk, its feature cache's and the size per photo trained on, in words."""
        from oste_core.engine.feature_cache import CACHE_DIR, cache_cap_mb

        total, features = folder_size(self.path), folder_size(self.path / CACHE_DIR)
        images = self.load_json(DATA).get("images")
        text = f"{total / 2**20:.0f} MB (features/ {features / 2**20:.0f} MB"
        if images:
            text += f"; {total / images / 2**20:.2f} MB per photo, {images} photos"
            if self.file(CONFIG).exists():
                cap = cache_cap_mb(self.load_config().train.feature_cache_mb, images)
                text += f"; features/ capped at {cap:.0f} MB" if cap != float("inf") else "; features/ not capped"
        return text + ")"

    # ------------------------------------------------------ settings, logs
    def save_config(self, cfg: OSTEConfig) -> None:
        cfg.save(self.file(CONFIG))

    def has_config(self) -> bool:
        """True when the run's settings can be read: ``config.yaml``, or the weights that also hold them."""
        return self.file(CONFIG).is_file() or self.has_weights()

    def load_config(self) -> OSTEConfig:
        """The run's settings: ``config.yaml``, else (deleted) those saved in the weights; ``RunError`` if damaged."""
        path = self.file(CONFIG)
        if not path.exists():
            if not self.has_weights():
                raise RunError(f"{path}: not found (is {self.path} a run folder?)")
            weights = self.weights_file()
            try:
                return OSTEConfig.from_dict(self.load_weights(weights)["config"])
            except (KeyError, TypeError, ValueError) as exc:
                raise RunError(f"{weights}: holds no readable settings ({exc}), and {path} is missing") from exc
        try:
            return OSTEConfig.load(path)
        except (yaml.YAMLError, ValueError, TypeError, KeyError, AttributeError) as exc:
            raise RunError(damaged_message(path, str(exc).splitlines()[0] if str(exc) else type(exc).__name__)) from exc

    def save_classes(self, class_names: list[str]) -> None:
        atomic_write_text(self.file(CLASSES), "".join(f"{name}\n" for name in class_names))

    def load_classes(self) -> list[str] | None:
        """The run's class names, or None when it has no ``classes.txt``."""
        if not self.file(CLASSES).exists():
            return None
        return self.file(CLASSES).read_text(encoding="utf-8").splitlines()

    def save_json(self, name: str, data: dict[str, Any]) -> None:
        atomic_write_text(self.file(name), json.dumps(data, indent=2))

    def load_json(self, name: str) -> dict[str, Any]:
        """A JSON file of the run ({} when it is missing or unreadable)."""
        try:
            return json.loads(self.file(name).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}

    def save_problems(self, problems: list[str]) -> None:
        atomic_write_text(self.file(PROBLEMS), "".join(f"{line}\n" for line in problems))

    def append_metrics(self, record: dict[str, Any]) -> None:
        """One line of ``metrics.jsonl`` (appended; a line is small enough to be written whole)."""
        try:
            with open(self.file(METRICS), "a", encoding="utf-8") as log:
                log.write(json.dumps(record) + "\n")
        except OSError as exc:
            if not is_disk_full(exc):
                raise
            raise DiskFullError(f"{self.file(METRICS)}: the disk is full; the last checkpoint is kept: free some "
                                "space, then resume the run") from exc
