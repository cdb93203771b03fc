"""The CRF's label bias learnt from the annotator's pixels (``suggest/calibration.py``)."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import torch

from conftest import tiny_config
from oste_core.data import open_folder
from oste_core.engine.predictor import Predictor
from oste_core.engine.trainer import Trainer
from oste_core.suggest.calibration import apply_label_bias, bias_sample, fit_label_bias


def _under_scored_photo(seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A photo of background and class 2 whose unaries score class 2 too low everywhere."""
    generator = torch.Generator().manual_seed(seed)
    truth = (torch.rand(40, 50, generator=generator) < 0.5).long() * 2
    score = torch.where(truth == 2, 0.4, 0.1) + 0.05 * torch.rand(40, 50, generator=generator)
    return torch.tensor([0, 2]), torch.stack([1 - score, score]), truth


def test_the_bias_lifts_an_under_scored_class_and_needs_two_photos():
    photos = [_under_scored_photo(seed) for seed in range(3)]
    parts = [bias_sample(*photo) for photo in photos]
    assert fit_label_bias(parts[:1], 4) is None
    bias = fit_label_bias(parts, 4)
    assert bias[2] > bias[0] and bias[1] == bias[3] == 0  # classes no photo shows keep no bias
    allowed, mixed, truth = photos[0]
    before = (allowed[mixed.argmax(0)] == truth).float().mean()
    after = (allowed[apply_label_bias(mixed, allowed, bias).argmax(0)] == truth).float().mean()
    assert before < 0.6 and after > 0.95
    assert torch.allclose(apply_label_bias(mixed, allowed, bias).sum(0), torch.ones(40, 50))
    unlabelled = torch.full((40, 50), 255)
    assert bias_sample(allowed, mixed, unlabelled) is None


def test_verified_photos_teach_a_bias_that_changes_the_other_suggestions(demo_folder, tmp_path):
    data = Path(shutil.copytree(demo_folder, tmp_path / "data"))
    cfg = tiny_config(**{"train.freeze_backbone": True, "train.fast_max_side": 48, "train.checkpoint_every": 0})
    Trainer(cfg, data, tmp_path / "run").run()
    folder = open_folder(data)
    for sample in folder.samples[:3]:
        target = folder.verified_path(sample)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(sample.gt_mask, target)
    folder = open_folder(data)
    other = folder.samples[-1]

    plain = Predictor.from_run(tmp_path / "run", device="cpu")
    plain.cfg.model.suggestion_label_bias = False
    plain.clear_cache()
    assert plain.learn_from_user(folder) and plain.label_bias is None
    biased = Predictor.from_run(tmp_path / "run", device="cpu")
    assert biased.learn_from_user(folder)
    assert biased.label_bias is not None and biased.label_bias.shape == (len(folder.class_names) + 1,)
    assert float(biased.label_bias.abs().max()) > 0
    with_bias = biased.predict_sample(folder, other)
    without = plain.predict_sample(folder, other)
    assert not np.array_equal(with_bias.suggestion_confidence, without.suggestion_confidence)
    np.testing.assert_array_equal(with_bias.pseudo_label, without.pseudo_label)  # FBE is not biased
