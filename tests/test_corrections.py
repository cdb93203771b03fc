"""Corrections that count: sparse corrections on disk, the refit with the annotator's pixels, click seeds."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import tiny_config
from oste_core.config import ModelConfig
from oste_core.data import load_mask, open_folder
from oste_core.engine.predictor import Predictor
from oste_core.engine.trainer import Trainer
from oste_core.export import export_folder
from oste_core.labels import UNSURE
from oste_core.models.modules.crf import make_crf
from oste_core.suggest.recipe import make_suggestion
from oste_core.suggest.corrections import corrections_path, load_corrections, save_corrections
from oste_core.suggest.refresh import refresh_order, refresh_suggestions
from oste_core.suggest.seeds import labels_on_grid, seed_hints
from oste_core.suggest.teaching import TEACHING_FILE, TeachingSet

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def trained(demo_folder, tmp_path_factory) -> tuple[Path, Path]:
    """A tiny fast-mode run on a private copy of the demo folder."""
    work = tmp_path_factory.mktemp("corrections")
    data = Path(shutil.copytree(demo_folder, work / "data"))
    cfg = tiny_config(**{"train.freeze_backbone": True, "train.fast_max_side": 48, "train.checkpoint_every": 0})
    Trainer(cfg, data, work / "run").run()
    return data, work / "run"


def test_corrections_round_trip_and_an_empty_one_removes_the_file(tmp_path):
    strokes = np.full((20, 30), UNSURE, np.uint8)
    strokes[2:5, 3:9] = 2
    strokes[10, 10] = 0
    path = save_corrections(tmp_path, "img", strokes)
    assert path == corrections_path(tmp_path, "img") and path.is_file()
    assert np.array_equal(load_corrections(tmp_path, "img"), strokes)
    assert load_corrections(tmp_path, "img", shape=(10, 15)).shape == (10, 15)
    strokes[2:5, 3:9] = 7
    save_corrections(tmp_path, "img", strokes)
    assert set(np.unique(load_corrections(tmp_path, "img", num_classes=3))) == {0, 255}  # 7 is no class here
    assert save_corrections(tmp_path, "img", np.full((20, 30), UNSURE, np.uint8)) is None
    assert not path.exists() and load_corrections(tmp_path, "img") is None


def test_the_corrections_folder_is_not_scanned_for_images(trained):
    data, _ = trained
    before = len(open_folder(data).samples)
    save_corrections(data, "not_an_image", np.zeros((8, 8), np.uint8))
    try:
        folder = open_folder(data)
        assert len(folder.samples) == before and not folder.untagged
    finally:
        corrections_path(data, "not_an_image").unlink()


def test_the_run_keeps_a_compact_teaching_sample(trained):
    _, run = trained
    teaching = TeachingSet.load(run)
    assert (run / TEACHING_FILE).is_file() and teaching is not None
    assert teaching.features.shape[0] == teaching.labels.shape[0] == teaching.images.shape[0] > 0
    assert teaching.basis.shape[0] == teaching.mean.shape[0] > teaching.features.shape[1]
    predictor = Predictor.from_run(run, device="cpu")
    compact = predictor.teaching.fit()  # fitted in the compact space, applied to the descriptors
    assert compact is not None and compact.weight.shape == (predictor.num_classes + 1, teaching.basis.shape[1])
    probe = teaching.probe(compact)
    assert probe.weight.shape == (predictor.num_classes + 1, teaching.mean.shape[0])
    features = torch.randn(teaching.mean.shape[0], 3, 4)
    compact_features = teaching.project(features.flatten(1).T).T.reshape(-1, 3, 4)
    assert torch.allclose(probe.logits(features), compact.logits(compact_features), atol=1e-3)


def test_a_refit_with_verified_and_stroked_pixels_changes_the_other_suggestions(trained, tmp_path):
    data, run = trained
    data = Path(shutil.copytree(data, tmp_path / "data"))
    folder = open_folder(data)
    predictor = Predictor.from_run(run, device="cpu")
    before = {s.stem: predictor.predict_sample(folder, s).suggestion for s in folder.samples}
    probe_before = predictor.priors.pixel_probe.weight.clone()
    verified, stroked = folder.samples[0], folder.samples[1]
    (data / "verified").mkdir(exist_ok=True)
    shutil.copyfile(verified.gt_mask, folder.verified_path(verified))
    truth = load_mask(stroked.gt_mask)
    strokes = np.full(truth.shape, UNSURE, np.uint8)
    strokes[truth == 0] = 0  # the stroked image's background, as eraser strokes
    save_corrections(data, stroked.stem, strokes)
    folder = open_folder(data)
    changed = []
    report = refresh_suggestions(predictor, folder, current=folder.samples[3].stem,
                                 on_prediction=lambda stem, _: changed.append(stem))
    assert report.refit and report.refreshed == len(folder.samples) and not report.cancelled
    assert changed[0] == folder.samples[3].stem
    assert not torch.equal(predictor.priors.pixel_probe.weight, probe_before)
    stems = predictor.teaching.user_stems
    assert stems == sorted([verified.stem, stroked.stem])
    after = {s.stem: predictor.predict_sample(folder, s).suggestion for s in folder.samples}
    others = [stem for stem in before if stem not in stems]
    assert any(not np.array_equal(before[stem], after[stem]) for stem in others)
    # the stroked image keeps its strokes; nothing changed on disk means no second refit
    stroked_suggestion = predictor.predict_sample(folder, folder.find(stroked.stem)).suggestion
    assert (stroked_suggestion[_fit(truth, stroked_suggestion.shape) == 0] == 0).all()
    assert not predictor.learn_from_user(folder)
    # removing the corrections and the verified mask brings the trained classifier back
    save_corrections(data, stroked.stem, np.full(truth.shape, UNSURE, np.uint8))
    folder.verified_path(verified).unlink()
    assert predictor.learn_from_user(open_folder(data)) and torch.equal(predictor.priors.pixel_probe.weight, probe_before)


def _fit(mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    import cv2

    return cv2.resize(mask, (shape[1], shape[0]), interpolation=cv2.INTER_NEAREST)


def test_corrections_are_part_of_the_suggestion_export_not_of_the_verified_one(trained, tmp_path):
    data, run = trained
    data = Path(shutil.copytree(data, tmp_path / "data"))
    folder = open_folder(data)
    sample = folder.samples[0]
    truth = load_mask(sample.gt_mask)
    strokes = np.full(truth.shape, UNSURE, np.uint8)
    strokes[:4, :4] = 1
    save_corrections(data, sample.stem, strokes)
    predictor = Predictor.from_run(run, device="cpu")
    export_folder(open_folder(data), tmp_path / "suggested", predictor=predictor)
    assert (load_mask(tmp_path / "suggested" / "voc" / "SegmentationClass" / f"{sample.stem}.png")[:4, :4] == 1).all()
    summary = export_folder(open_folder(data), tmp_path / "verified_only", what="verified")
    assert not (tmp_path / "verified_only" / "voc" / "SegmentationClass" / f"{sample.stem}.png").exists()
    assert summary.counts.get("voc", 0) == 0


def test_a_click_seed_flips_the_region_that_looks_like_it():
    """Two regions with different descriptors, both called class 1 by the CAM (a background strip on the left):
    a background click on the right one turns that region to background and leaves the left one."""
    height, width = 32, 32
    descriptors = torch.zeros(8, 8, 8)
    descriptors[2, :, :1] = 1.0  # the background strip
    descriptors[0, :, 1:4] = 1.0  # the left region
    descriptors[1, :, 4:] = 1.0  # the right region
    descriptors += 0.05 * torch.rand(8, 8, 8, generator=torch.Generator().manual_seed(0))
    cams = torch.ones(1, 8, 8)
    cams[:, :, 0] = 0.0
    image = torch.full((3, height, width), 128, dtype=torch.uint8)
    seg_logits = torch.zeros(2, height, width)
    cfg = ModelConfig(suggestion_seg_weight=0.0)
    crf = make_crf("torch", iters=3)
    plain, _ = make_suggestion(seg_logits, cams, image, [1], None, cfg, crf)
    assert (plain[:, 8:12] == 1).all() and (plain[:, 20:] == 1).all()
    click = np.full((height, width), UNSURE, np.uint8)
    click[14:17, 26:29] = 0
    hints = seed_hints(descriptors, click, plain.numpy().astype(np.uint8), (height, width))
    seeded, confidence = make_suggestion(seg_logits, cams, image, [1], None, cfg, crf, seeds=hints)
    assert (seeded[:, 20:] == 0).float().mean() > 0.9  # the clicked region
    assert (seeded[:, 6:12] == 1).float().mean() > 0.9  # the other one keeps its label
    assert (seeded[14:17, 26:29] == 0).all() and (confidence[14:17, 26:29] == 1).all()


def test_labels_on_grid_keep_thin_strokes_with_a_small_share():
    mask = np.full((16, 16), UNSURE, np.uint8)
    mask[3, :] = 2
    assert (labels_on_grid(mask, (4, 4)) == UNSURE).all()
    assert (labels_on_grid(mask, (4, 4), min_share=0.01)[0] == 2).all()


def test_refresh_order_puts_the_current_image_and_its_followers_first():
    stems = [f"s{i}" for i in range(10)]
    assert refresh_order(stems, "s7", next_first=2) == ["s7", "s8", "s9", *[f"s{i}" for i in range(7)]]
    assert refresh_order(stems, None) == stems


def test_bench_loop_runs_on_a_tiny_folder(trained, tmp_path):
    data, run = trained
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_loop.py"), str(data), "--run", str(run), "--per-round", "2",
         "--rounds", "1", "--max-clicks", "2", "--click-images", "3", "--device", "cpu", "--keep", str(tmp_path)],
        capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Folder gain, verify" in result.stdout and "Folder gain, strokes" in result.stdout
    assert "| 85% |" in result.stdout and "| 1 | 2 |" in result.stdout


def test_a_click_does_not_pull_unsure_cells_that_look_like_another_label():
    """FBE leaves most cells unsure: they move to a click's label only when it is their nearest prototype."""
    descriptors = torch.zeros(2, 8, 8)
    descriptors[0, :, :4] = 1.0  # the left half looks like label 1
    descriptors[1, :, 4:] = 1.0  # the right half like background
    current = np.full((8, 8), UNSURE, np.uint8)
    current[:2, :4] = 1  # FBE is sure of a little of each
    current[:2, 4:] = 0
    click = np.full((8, 8), UNSURE, np.uint8)
    click[6, 6] = 0  # a background click in the unsure right half
    hints = seed_hints(descriptors, click, current, (8, 8), reach=10.0)
    affinity = hints.affinity[0]
    assert float(affinity[5:, 4:].min()) > 0.45  # unsure cells like the click: as near its label as the click
    assert float(affinity[5:, :4].max()) < 0.01  # unsure cells like label 1 stay with it
