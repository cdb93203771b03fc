"""What a training tells its caller: its events (`TrainEvent`, to the CLI and the GUI), the error that stops
it (`TrainingError`) and the mean time of each phase of its steps (`PhaseTimer`, for the benchmarks)."""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch


class TrainingError(RuntimeError):
    """Training cannot go on (diverged, no usable images, bad resume); the message says why."""


@dataclass
class TrainEvent:
    # "start" | "features" | "progress" | "checkpoint" | "priors" | "probe" | "affinity" | "suggestions" | "log" | "done" | "cancelled"
    kind: str
    iteration: int = 0
    total: int = 0
    losses: dict[str, float] = field(default_factory=dict)
    lr: float = 0.0
    images_per_s: float = 0.0
    eta_s: float = 0.0  # seconds left in the whole job, every phase (progress.py)
    message: str = ""
    timings: dict[str, float] = field(default_factory=dict)  # mean seconds per step of each phase
    phase: str = ""  # the job's current phase ("features", "warm-up", "training", ...; progress.py)
    phase_done: int = 0  # its units done (images, iterations; seconds of an update)
    phase_total: int = 0


class PhaseTimer:
    """Mean wall time per training phase; synchronises CUDA so GPU work is attributed correctly."""

    def __init__(self, device: torch.device, enabled: bool = True) -> None:
        self.device, self.enabled = device, enabled
        self.totals: dict[str, float] = {}
        self.steps = 0
        self._last = 0.0

    def start(self) -> None:
        self._sync()
        self._last = time.perf_counter()

    def mark(self, phase: str) -> None:
        self._sync()
        now = time.perf_counter()
        self.totals[phase] = self.totals.get(phase, 0.0) + now - self._last
        self._last = now

    def reset(self) -> None:
        self.totals.clear()
        self.steps = 0

    def means(self) -> dict[str, float]:
        return {k: v / max(self.steps, 1) for k, v in self.totals.items()}

    def _sync(self) -> None:
        if self.enabled and self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
