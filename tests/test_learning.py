"""A real tiny training on synthetic data learns: image-level tags become predictable.

This checks that the one-step training loop optimises what it should (about 30 s on 2 CPU cores).
Pseudo-label quality after such a short CPU run is NOT checked here: on 64 px demo images, 40
iterations did not yet beat the untrained model's pseudo-labels (see the closing notes of the
training issue and benchmarks/bench_quality.py for the measured numbers).
"""
from __future__ import annotations

import json

import numpy as np
import torch

from oste_core.data import load_image, open_folder
from oste_core.engine.predictor import Predictor
from oste_core.engine.trainer import Trainer
from tests.conftest import tiny_config


def _tag_accuracy(run, folder) -> float:
    model = Predictor.from_run(run, device="cpu").model
    mean = torch.tensor(model.backbone.input_mean).view(1, 3, 1, 1)
    std = torch.tensor(model.backbone.input_std).view(1, 3, 1, 1)
    correct = []
    with torch.no_grad():
        for sample in folder.samples:
            pixels = torch.from_numpy(load_image(sample.image_path).copy()).permute(2, 0, 1)[None].float() / 255
            logits = model((pixels - mean) / std)["logits"][0]
            truth = torch.zeros_like(logits, dtype=torch.bool)
            truth[[k - 1 for k in folder.tag_indices(sample)]] = True
            correct.append(((logits > 0) == truth).float().mean().item())
    return float(np.mean(correct))


def test_training_learns_the_tags(demo_folder, tmp_path):
    folder = open_folder(demo_folder)
    overrides = {"train.batch": 6, "model.use_lem": False, "train.log_every": 1}
    untrained = Trainer(tiny_config(**overrides, **{"train.iters": 0}), demo_folder, tmp_path / "untrained").run()
    trained = Trainer(tiny_config(**overrides, **{"train.iters": 40}), demo_folder, tmp_path / "trained").run()
    log = [json.loads(line) for line in (trained / "metrics.jsonl").read_text().splitlines()]
    first, last = np.mean([r["cls"] for r in log[:5]]), np.mean([r["cls"] for r in log[-5:]])
    assert last < 0.8 * first, (first, last)
    assert _tag_accuracy(trained, folder) > _tag_accuracy(untrained, folder) + 0.1
