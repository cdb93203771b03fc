"""The whole job's ETA (progress.py): its phases on a tiny training, measured and predicted rates, and the
CLI's progress lines when the output is not a terminal (cli_progress.py)."""
from __future__ import annotations

import io
import shutil
from pathlib import Path

import pytest

from conftest import tiny_config
from oste_core.cli_progress import ProgressPrinter, pass_progress
from oste_core.config import default_config
from oste_core.engine.progress import DEFAULT_SPEED_S, RELATIVE_COST, JobEstimate, Phase, TrainingJob
from oste_core.engine.trainer import Trainer, TrainEvent


class Clock:
    """A clock the test moves by hand (no timed assertions)."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def own_folder(demo_folder, tmp_path) -> Path:
    return Path(shutil.copytree(demo_folder, tmp_path / "data"))


def test_a_tiny_fast_mode_training_reports_each_phase_with_the_whole_jobs_eta(own_folder, tmp_path):
    cfg = tiny_config(**{"train.freeze_backbone": True, "train.fast_max_side": 48, "train.checkpoint_every": 0,
                         "train.iters": 6, "loss.seg_warmup_iters": 4})
    events: list[TrainEvent] = []
    Trainer(cfg, own_folder, tmp_path / "run", on_event=events.append).run()
    phases = list(dict.fromkeys(e.phase for e in events if e.phase))
    assert phases == ["features", "warm-up", "training", "priors", "pixel classifier", "suggestions"]
    last = {e.phase: e for e in events if e.phase}
    assert (last["features"].phase_done, last["features"].phase_total) == (12, 12)
    assert (last["warm-up"].phase_total, last["training"].phase_total) == (4, 2)
    assert last["pixel classifier"].phase_done == last["pixel classifier"].phase_total == 12
    assert last["suggestions"].phase_done == last["suggestions"].phase_total == 12
    assert all(e.eta_s >= 0 and 0 <= e.phase_done <= e.phase_total for e in events)
    assert events[-1].kind == "done" and events[-1].eta_s == 0
    # an update of the same run: its features are cached, so the job is its time budget alone
    updates: list[TrainEvent] = []
    Trainer(cfg, own_folder, tmp_path / "run", on_event=updates.append).run_update(budget_s=1.0)
    assert {e.phase for e in updates if e.phase} == {"update"}
    assert all(e.phase_total == 1 and e.eta_s <= 1.0 for e in updates if e.phase)


def test_the_plan_counts_every_phase_of_the_cpu_default():
    cfg = default_config("cpu")
    job = TrainingJob(cfg, images=180, start_iter=0)
    totals = {name: phase.total for name, phase in job.phases.items()}
    assert totals == {"features": 180, "warm-up": 300, "training": 60, "priors": 180, "pixel classifier": 180,
                      "suggestions": 180}
    resumed = TrainingJob(cfg, images=180, start_iter=320)  # resumed past the warm-up
    assert "warm-up" not in resumed.phases and resumed.phases["training"].total == 40
    update = TrainingJob(cfg, images=180, start_iter=360, update_budget_s=45)
    assert list(update.phases) == ["features", "update"] and update.phases["update"].timed


def test_unstarted_phases_are_predicted_from_the_measured_speed_and_replaced_by_their_own_rate():
    clock = Clock()
    job = JobEstimate([Phase("features", 10, 1.0), Phase("warm-up", 100, 0.1)], clock)
    assert job.eta_s() == pytest.approx(DEFAULT_SPEED_S * (10 + 10))  # nothing measured yet
    job.begin("features")
    for done in range(1, 6):  # 2 s per feature image
        clock.now = 2.0 * done
        job.advance("features", done)
    assert job.speed() == pytest.approx(2.0)
    # the features' own rate (2 s) and the warm-up predicted at 0.1 x 2 s per iteration
    assert job.eta_s() == pytest.approx(5 * 2.0 + 100 * 0.2)
    clock.now = 11.0  # one second into the sixth image
    assert job.eta_s() == pytest.approx(5 * 2.0 - 1.0 + 100 * 0.2)
    for done in range(1, 11):  # the warm-up runs at 1 s per iteration, 5x slower than predicted
        clock.now = 10.0 + done
        job.advance("warm-up", done)
    eta = job.eta_s()
    assert job.phases["features"].finished and 90 * 0.2 < eta < 90 * 1.0  # the measured rate takes over...
    for done in range(11, 51):
        clock.now = 10.0 + done
        job.advance("warm-up", done)
    assert job.eta_s() == pytest.approx(50 * 1.0, rel=0.1)  # ...and dominates once it has enough units
    job.finish()
    assert job.eta_s() == 0


def test_a_time_budget_counts_down_and_the_relative_costs_cover_every_pass():
    clock = Clock()
    job = JobEstimate([Phase("update", 45, timed=True)], clock)
    job.begin("update")
    clock.now = 15.0
    assert job.eta_s() == pytest.approx(30.0) and job.snapshot() == ("update", 15, 45, pytest.approx(30.0))
    assert {"features", "warm-up", "training", "priors", "pixel classifier", "predictions"} <= set(RELATIVE_COST)


def test_lines_when_the_output_is_not_a_terminal():
    clock, out = Clock(), io.StringIO()
    printer = ProgressPrinter(out, tty=False, every_s=10.0, clock=clock, background=False)
    printer.show("features", 1, 180, 600.0)  # a new phase: a line at once
    clock.now = 4.0
    printer.show("features", 9, 180, 590.0)  # 4 s later: no line yet
    clock.now = 12.0
    printer.tick()  # no event for 8 s more: the background thread's tick prints the latest state
    printer.message("a log message")
    clock.now = 13.0
    printer.show("warm-up", 1, 300, 500.0)
    printer.close()
    lines = out.getvalue().splitlines()
    assert len(lines) == 4 and lines[2] == "a log message"
    assert "features 1/180, ETA 10 min 00 s" in lines[0]
    assert "features 9/180, ETA 9 min 42 s" in lines[1]  # counted down from the estimate of 8 s before
    assert lines[3].startswith("[") and "warm-up 1/300, ETA 8 min 20 s (total about 8 min 33 s)" in lines[3]


def test_a_prediction_pass_prints_its_phase():
    out = io.StringIO()
    on_progress, printer = pass_progress("predictions", 3, out)
    for done in range(1, 4):
        on_progress(done, 3)
    printer.close()
    assert "predictions 1/3, ETA" in out.getvalue()
