"""A real tiny training on synthetic data learns: tags become predictable and pseudo-labels get better.

One short CPU run (about 30 s of training on 2 cores) on 48 synthetic 96 px images, then the project's
own evaluation (`evaluate_run`, against the demo ground-truth masks) of the trained and the untrained
model. Why this size (measured): at 64 px, 40 iterations did NOT beat the untrained model's pseudo-labels,
with 12 or 48 images (0.08-0.11 vs 0.14-0.15 mIoU): the 8x8 CAM of the dilated EfficientNet-Lite0 stays
flat (its floor above 60 % of its peak) and no pixel gets a confident background label. At 96 px 12
images are memorised (classification loss ~0.05 after 20 iterations) before the CAMs localise (0.16 vs
0.15); 48 images at 96 px localise the objects within 30 iterations. The untrained model's pseudo-labels
are nearly all background (a random classifier's ReLU CAM is often zero): about 0.15 mIoU on their own.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import torch

from oste_core.data import LabelledFolder, load_image, open_folder, write_demo_data
from oste_core.engine.predictor import Predictor
from oste_core.engine.run_eval import evaluate_run
from oste_core.engine.trainer import Trainer
from tests.conftest import tiny_config

OVERRIDES = {"train.crop": 96, "train.batch": 6, "model.use_lem": False, "train.log_every": 1,
             "train.checkpoint_every": 0}
ITERS = 30
TAG_IMAGES = 16  # tag accuracy on the first 16 training images


def _tag_accuracy(predictor: Predictor, folder: LabelledFolder) -> float:
    model = predictor.model
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


def learn(tmp_path: Path, seed: int = 0) -> dict:
    """Train 0 and ``ITERS`` iterations on fresh demo data; evaluate both (also used by seed checks)."""
    data = write_demo_data(tmp_path / "data", n=48, size=96, seed=seed)
    folder = open_folder(data)
    tagged = dataclasses.replace(folder, samples=folder.samples[:TAG_IMAGES], problems=[])
    results = {}
    for name, iters in (("untrained", 0), ("trained", ITERS)):
        cfg = tiny_config(**OVERRIDES, **{"train.iters": iters, "train.seed": seed})
        run = Trainer(cfg, data, tmp_path / name).run()
        predictor = Predictor.from_run(run, device="cpu")
        report = evaluate_run(predictor, folder)  # pseudo-labels are made for the training images
        report["tag_accuracy"] = _tag_accuracy(predictor, tagged)
        report["log"] = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()] if iters else []
        results[name] = report
    return results


def test_training_learns_tags_and_better_pseudo_labels(tmp_path):
    results = learn(tmp_path)
    untrained, trained = results["untrained"], results["trained"]
    log = trained["log"]
    first, last = np.mean([r["cls"] for r in log[:5]]), np.mean([r["cls"] for r in log[-5:]])
    assert last < 0.8 * first, (first, last)
    assert trained["tag_accuracy"] > untrained["tag_accuracy"] + 0.1, (untrained["tag_accuracy"], trained["tag_accuracy"])
    summary = {name: {k: round(r[k], 3) for k in ("cam_miou", "pseudo_miou", "pseudo_coverage", "seg_miou")}
               for name, r in results.items()}
    # measured on the 2-core dev CPU, pseudo mIoU untrained -> trained: seed 0 0.162 -> 0.269,
    # seed 1 0.124 -> 0.252, seed 2 0.204 -> 0.266 (the untrained value depends on the random classifier)
    assert trained["pseudo_miou"] >= untrained["pseudo_miou"] + 0.05, summary
    assert trained["cam_miou"] > untrained["cam_miou"], summary
