"""Nothing computed twice: the end of training stores every suggestion in the run, and the export, a restart
and a refit after a correction reuse what did not change (``suggest/store.py``)."""
from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import tiny_config
from oste_core.data import load_mask, open_folder
from oste_core.engine.feature_cache import CACHE_DIR, SUFFIX
from oste_core.engine.predictor import Predictor
from oste_core.engine.trainer import Trainer
from oste_core.export import export_folder
from oste_core.export.voc import VOC_DIR
from oste_core.suggest.store import STORE_DIR

CONFIG = {"train.freeze_backbone": True, "train.fast_max_side": 48, "train.checkpoint_every": 0}


@pytest.fixture()
def trained(demo_folder, tmp_path) -> tuple[Path, Path]:
    data = Path(shutil.copytree(demo_folder, tmp_path / "data"))
    Trainer(tiny_config(**CONFIG), data, tmp_path / "run").run()
    return data, tmp_path / "run"


def _stored(run: Path, kind: str) -> dict[str, int]:
    """The store's files of one kind ("state" or "result") -> their modification time."""
    return {file.name: file.stat().st_mtime_ns for file in (run / STORE_DIR).glob(f"*.{kind}.npz")}


def _prediction_features(run: Path) -> list[Path]:
    return [file for file in (run / CACHE_DIR).rglob(f"*{SUFFIX}") if file.parent != run / CACHE_DIR]


def test_training_leaves_every_suggestion_ready_and_the_export_recomputes_none(trained, tmp_path):
    data, run = trained
    folder = open_folder(data)
    states, results = _stored(run, "state"), _stored(run, "result")
    assert len(states) == len(results) == len(folder.samples)
    assert not _prediction_features(run)  # the stored states replace the prediction-scale features

    export_folder(folder, tmp_path / "out", ["voc"], predictor=Predictor.from_run(run, device="cpu"))
    assert _stored(run, "result") == results and _stored(run, "state") == states  # read, not made again
    assert not _prediction_features(run)  # no backbone pass either
    restarted = Predictor.from_run(run, device="cpu")  # a new session gives the suggestions it stored
    for sample in folder.samples[:3]:
        exported = load_mask(tmp_path / "out" / VOC_DIR / "SegmentationClass" / f"{sample.stem}.png")
        stored = restarted.predict_sample(folder, sample).suggestion
        resized = cv2.resize(stored, exported.shape[::-1], interpolation=cv2.INTER_NEAREST)
        assert np.array_equal(exported, resized)


def test_a_correction_remakes_the_suggestions_once_and_a_restart_reuses_them(trained):
    data, run = trained
    folder = open_folder(data)
    sample = folder.samples[0]
    target = folder.verified_path(sample)
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(sample.gt_mask, target)
    folder = open_folder(data)
    before = _stored(run, "result")

    predictor = Predictor.from_run(run, device="cpu")
    assert predictor.learn_from_user(folder)  # the refitted classifier changes every suggestion
    first = {s.stem: predictor.predict_sample(folder, s).suggestion for s in folder.samples}
    remade = _stored(run, "result")
    assert remade.keys() == before.keys() and all(remade[name] != before[name] for name in before)

    restarted = Predictor.from_run(run, device="cpu")
    restarted.learn_from_user(folder)  # the same annotator pixels: the same refit, its stored suggestions
    again = {s.stem: restarted.predict_sample(folder, s).suggestion for s in folder.samples}
    assert _stored(run, "result") == remade
    assert all(np.array_equal(first[stem], again[stem]) for stem in first)


def test_an_update_makes_the_stored_suggestions_stale(trained):
    data, run = trained
    before = set(_stored(run, "state"))
    Trainer(tiny_config(**CONFIG), data, run).run_update(budget_s=1.0)
    assert not set(_stored(run, "state")) & before  # the old weights' files are gone
    folder = open_folder(data)
    predictor = Predictor.from_run(run, device="cpu")
    predictor.predict_sample(folder, folder.samples[0])  # made with the new weights, and stored
    assert len(_stored(run, "state")) == len(_stored(run, "result")) == 1


def test_an_unreadable_stored_file_is_made_again(trained):
    data, run = trained
    folder = open_folder(data)
    for file in (run / STORE_DIR).glob("*.npz"):
        file.write_bytes(b"not an npz")
    prediction = Predictor.from_run(run, device="cpu").predict_sample(folder, folder.samples[0])
    assert prediction.suggestion.size > 0
    assert len([f for f in (run / STORE_DIR).glob("*.npz") if f.stat().st_size > 100]) == 2
