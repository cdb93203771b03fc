"""SIGKILL at random instants (real subprocesses, real files): a few kill points per scenario of
benchmarks/bench_crash.py, which runs the full sweep (12+ per scenario) and prints the counts."""
from __future__ import annotations

import importlib.util
import random
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("bench_crash", ROOT / "benchmarks" / "bench_crash.py")
bench_crash = sys.modules.setdefault("bench_crash", importlib.util.module_from_spec(_spec))
_spec.loader.exec_module(bench_crash)

KILLS = 2  # per scenario here; the benchmark's default is 12


@pytest.fixture(scope="module")
def work(tmp_path_factory, demo_folder) -> tuple[Path, Path]:
    """A work folder and an 8-image copy of the demo folder, shared by the scenarios (one trained run)."""
    work = tmp_path_factory.mktemp("crash")
    data = Path(shutil.copytree(demo_folder, work / "data"))
    return work, data


def check(outcomes) -> None:
    failed = [o for o in outcomes if not o.ok]
    assert not failed, "\n".join(f"{o.scenario} killed after {o.delay_s:.2f} s: {o.recovered}: {o.detail}"
                                 for o in failed)
    assert len(outcomes) >= KILLS


@pytest.mark.slow
def test_killed_training_resumes_or_says_it_cannot(work):
    check(bench_crash.train_kills(*work, KILLS, random.Random(1)))


@pytest.mark.slow
def test_killed_update_keeps_a_loadable_model(work):
    check(bench_crash.update_kills(*work, KILLS, random.Random(2)))


@pytest.mark.slow
def test_killed_export_leaves_only_complete_files_and_the_next_one_cleans_up(work):
    check(bench_crash.export_kills(*work, KILLS, random.Random(3)))


@pytest.mark.slow
def test_killed_gui_saves_leave_the_old_or_the_new_mask_and_tags(work):
    outcomes = bench_crash.save_kills(*work, 3, random.Random(4))
    check(outcomes)
    assert all(o.killed for o in outcomes)  # the save loop never ends by itself: every kill hit it
