"""A run folder: every file a training run writes, and the one place that reads and writes them.

| file | what |
| --- | --- |
| ``config.yaml`` | the full `OSTEConfig` of the run (reloaded by resume, updates and the predictor) |
| ``classes.txt`` | the class names, one per line, index 1..K |
| ``versions.json`` | Python, torch, OpenCV, ... versions (reproducibility) |
| ``data.json`` | the labelled folder trained on, its layout and image count |
| ``problems.txt`` | images skipped and other folder problems |
| ``metrics.jsonl`` | one JSON line per progress report: iteration, lr, losses, images/s |
| ``checkpoint.pt`` | latest weights + optimizer state (resume) |
| ``model.pt`` | final weights, config and classes (what the predictor loads) |
| ``features/`` | the fast mode's cached backbone features (``feature_cache.py``) |

Writes are atomic (temp file + rename): a crash never leaves half a file.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from oste_core.config import OSTEConfig
from oste_core.utils.io import atomic_path, atomic_write_text, folder_size

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
        """torch.save through a temp file + rename."""
        self.path.mkdir(parents=True, exist_ok=True)
        with atomic_path(self.file(name)) as tmp:
            torch.save(payload, tmp)
        return self.file(name)

    @staticmethod
    def load_weights(path: Path, device: torch.device | str = "cpu") -> dict:
        """A saved weights file (model state, config, classes, iteration, ...); ``RunError`` if unreadable."""
        try:
            return torch.load(path, map_location=device, weights_only=False)
        except Exception as exc:  # noqa: BLE001 - one clear message for any unreadable file
            raise RunError(f"{path}: cannot read this model file ({exc})") from exc

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

    def load_config(self) -> OSTEConfig:
        if not self.file(CONFIG).exists():
            raise RunError(f"{self.file(CONFIG)}: not found (is {self.path} a run folder?)")
        return OSTEConfig.load(self.file(CONFIG))

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
        with open(self.file(METRICS), "a", encoding="utf-8") as log:
            log.write(json.dumps(record) + "\n")

    def read_metrics(self) -> list[dict[str, Any]]:
        """Every readable line of ``metrics.jsonl`` (a torn last line is skipped)."""
        if not self.file(METRICS).exists():
            return []
        records = []
        for line in self.file(METRICS).read_text(encoding="utf-8").splitlines():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return records
