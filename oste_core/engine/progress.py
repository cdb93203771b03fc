"""The whole job's ETA: its phases, each one's rate as measured, re-estimated as the job runs.

A job is a list of ``Phase``: a training in the fast mode is the feature pass (images whose features are not
cached), the warm-up and the full iterations, the class priors (images), the pixel classifier (images, at the
prediction scale), where on, MAF's affinity (images, then steps), and every suggestion (images); an update is
the feature pass and its time budget; ``oste predict`` / ``eval`` / ``export`` is one pass of predictions.

A phase that runs is timed per unit; one that has not started is predicted from what has: its prior cost per
unit relative to one working-size feature image (``RELATIVE_COST``, ratios measured on a two-core CPU) times
this machine's speed measured so far (seconds per relative unit over every unit done). A running phase's own
rate takes over as its units complete (``PRIOR_UNITS`` of prior weight). Qt-free: the CLI and the GUI show
the same phase, done / total and ETA, carried by ``TrainEvent``.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable

from oste_core.config import OSTEConfig

# seconds per unit relative to one feature image at the working size; iterations per image of the batch.
# Ratios measured with the fast mode on two quiet cores (mix/, 2026-12-04: docs/BENCHMARKS.md, Speed and ETA);
# measured rates replace them as each phase runs
RELATIVE_COST = {
    "features": 1.0,  # per image: the backbone on the image and its LEM tiles
    "warm-up": 0.04,  # per image of the batch: the 1x1 CAM classifier on cached features
    "training": 0.6,  # per image of the batch: MAF, FBE with its CRF, the segmentation head, the energy loss
    "priors": 0.1,  # per image: the co-localisation fit's forward and descriptor statistics
    "pixel classifier": 1.85,  # per image: features at the prediction scale (2.25x the pixels, no tiles), a suggestion
    "affinity": 1.0,  # per image or step: MAF re-taught on the suggestion's pseudo-labels (not measured)
    "predictions": 2.0,  # per image: features at the prediction scale (when not cached) and a suggestion
    "suggestions": 1.5,  # per image: a suggestion from the cached prediction-scale features, stored
}
DEFAULT_SPEED_S = 0.75  # seconds per feature image before anything is measured (EfficientNet-Lite0, 2 cores)
PRIOR_UNITS = 2.0  # a running phase's rate: its measured units, plus this many at the predicted rate


@dataclass
class Phase:
    """One step of a job: ``total`` units (images, iterations; seconds when ``timed``) at ``cost`` each."""

    name: str
    total: int
    cost: float = 1.0  # prior seconds per unit, relative to one feature image
    timed: bool = False  # units are seconds (an update's budget)
    done: int = 0
    spent: float = 0.0  # seconds spent when ``done`` was last counted
    started: float | None = None
    finished: bool = False


class JobEstimate:
    """The phases of one job, advanced as it runs; ``eta_s`` re-estimates the time left of the whole job."""

    def __init__(self, phases: list[Phase], clock: Callable[[], float] = time.perf_counter) -> None:
        self.phases = {phase.name: phase for phase in phases if phase.total > 0}
        self.clock = clock
        self.current: Phase | None = None
        self._last_count = 0.0  # clock at the last counted unit of the current phase

    def set_total(self, name: str, total: int) -> None:
        """The phase's real unit count, once known (e.g. the images whose features are not cached)."""
        if name in self.phases:
            self.phases[name].total = total
            if total <= 0:
                del self.phases[name]

    def advance(self, name: str, done: int) -> None:
        """``done`` units of phase ``name`` are complete (the phases before it are then over)."""
        phase = self.phases.get(name)
        if phase is None:
            return
        now = self.clock()
        if phase is not self.current:  # its first unit began when the phase before it counted its last one
            self._start(phase, self._last_count if self.current is not None else now)
        if done != phase.done:
            phase.done = min(done, phase.total)
            phase.spent = now - phase.started
            self._last_count = now

    def begin(self, name: str) -> None:
        """Phase ``name`` starts now (its first unit is under way)."""
        phase = self.phases.get(name)
        if phase is not None and phase is not self.current:
            self._start(phase, self.clock())

    def finish(self) -> None:
        """The job is over: every phase done."""
        for phase in self.phases.values():
            phase.finished = True
        self.current = None

    def _start(self, phase: Phase, now: float) -> None:
        names = list(self.phases)
        for earlier in names[:names.index(phase.name)]:
            self.phases[earlier].finished = True
        phase.started, phase.finished, self.current = now, False, phase
        self._last_count = now

    def speed(self) -> float:
        """Seconds per relative unit, measured over every counted unit of the untimed phases."""
        spent = sum(p.spent for p in self.phases.values() if not p.timed and p.done)
        work = sum(p.cost * p.done for p in self.phases.values() if not p.timed and p.done)
        return spent / work if work > 0 else DEFAULT_SPEED_S

    def phase_eta_s(self, phase: Phase, speed: float | None = None) -> float:
        """Seconds left in one phase."""
        if phase.finished:
            return 0.0
        now = self.clock()
        if phase.timed:
            return max(phase.total - (now - phase.started if phase.started is not None else 0.0), 0.0)
        predicted = phase.cost * (self.speed() if speed is None else speed)
        rate = (phase.spent + PRIOR_UNITS * predicted) / (phase.done + PRIOR_UNITS)
        left = phase.total - phase.done
        if phase is not self.current:
            return left * rate
        # the unit under way has already taken (now - last count); it cannot take less than nothing
        return max(left * rate - (now - self._last_count), (left - 1) * rate, 0.0)

    def eta_s(self) -> float:
        """Seconds left in the whole job."""
        speed = self.speed()
        return sum(self.phase_eta_s(phase, speed) for phase in self.phases.values())

    def snapshot(self) -> tuple[str, int, int, float]:
        """(current phase, its units done, its total, seconds left in the whole job); phase "" before any."""
        phase = self.current
        if phase is None:
            return "", 0, 0, self.eta_s()
        done = round(min(self.clock() - phase.started, phase.total)) if phase.timed else phase.done
        return phase.name, done, phase.total, self.eta_s()


class TrainingJob(JobEstimate):
    """The phases of a training (or an update) as ``Trainer`` runs them, with the loop's iterations mapped to
    the warm-up, the full iterations or the update's budget."""

    def __init__(self, cfg: OSTEConfig, images: int, start_iter: int, update_budget_s: float | None = None,
                 maf_steps: int = 0, clock: Callable[[], float] = time.perf_counter) -> None:
        t, m = cfg.train, cfg.model
        fast = t.freeze_backbone
        self.start_iter, self.updating = start_iter, update_budget_s is not None
        self.warm_end = min(max(cfg.loss.seg_warmup_iters, start_iter), t.iters) if fast else start_iter
        phases = [Phase("features", images if fast else 0, RELATIVE_COST["features"])]
        if self.updating:
            phases.append(Phase("update", math.ceil(update_budget_s), timed=True))
        else:
            phases += [Phase("warm-up", self.warm_end - start_iter, RELATIVE_COST["warm-up"] * t.batch),
                       Phase("training", t.iters - self.warm_end, RELATIVE_COST["training"] * t.batch)]
        if fast and not self.updating:  # an update keeps the run's fits
            phases.append(Phase("priors", images if m.colocalisation_weight > 0 else 0, RELATIVE_COST["priors"]))
            phases.append(Phase("pixel classifier", images if m.pixel_probe_weight > 0 else 0,
                                RELATIVE_COST["pixel classifier"]))
            if m.use_maf and m.suggestion_maf_weight > 0:
                phases.append(Phase("affinity", images + maf_steps, RELATIVE_COST["affinity"]))
            phases.append(Phase("suggestions", images, RELATIVE_COST["suggestions"]))
        super().__init__(phases, clock)

    def loop_started(self) -> None:
        """The training loop starts: its first phase is under way."""
        self.begin("update" if self.updating else ("warm-up" if self.warm_end > self.start_iter else "training"))

    def iteration_done(self, iteration: int) -> None:
        """Iteration ``iteration`` (counted from 1) has ended."""
        if self.updating:
            return
        if iteration <= self.warm_end:
            self.advance("warm-up", iteration - self.start_iter)
        else:
            self.advance("training", iteration - self.warm_end)


def format_seconds(seconds: float) -> str:
    """``95`` -> ``1 min 35 s``; ``4000`` -> ``1 h 07 min``."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"
