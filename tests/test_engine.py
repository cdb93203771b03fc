"""Training engine and Predictor: real tiny runs on synthetic data on the CPU."""
from __future__ import annotations

import json
import shutil
import threading

import numpy as np
import pytest
import torch

from oste_core.data import load_image, load_mask, open_folder
from oste_core.engine.predictor import Predictor, RunError
from oste_core.engine.trainer import Trainer, TrainEvent, TrainingError
from oste_core.export import save_palette_png
from tests.conftest import tiny_config


def _train(cfg, data, run, resume=False):
    events: list[TrainEvent] = []
    Trainer(cfg, data, run, on_event=events.append).run(resume=resume)
    return events


def test_run_folder_holds_config_classes_versions_metrics_and_model(demo_folder, tmp_path):
    run = tmp_path / "run"
    events = _train(tiny_config(), demo_folder, run)
    kinds = [e.kind for e in events]
    assert kinds[0] == "start" and kinds[-1] == "done"
    progress = [e for e in events if e.kind == "progress"]
    assert [e.iteration for e in progress] == [1, 2, 3, 4]
    assert all(np.isfinite(e.losses["total"]) and e.images_per_s > 0 for e in progress)
    assert {"cls", "tile", "mae", "seg", "energy", "total"} <= set(progress[-1].losses)
    for name in ("config.yaml", "classes.txt", "versions.json", "metrics.jsonl", "model.pt"):
        assert (run / name).exists(), name
    assert not (run / "checkpoint.pt").exists()  # a finished run resumes from model.pt
    assert (run / "classes.txt").read_text().split() == open_folder(demo_folder).class_names
    assert "torch" in json.loads((run / "versions.json").read_text())
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 4
    assert "pseudo_labels" in events[-1].timings


def test_resume_continues_the_iteration_count(demo_folder, tmp_path):
    run = tmp_path / "run"
    _train(tiny_config(**{"train.iters": 2}), demo_folder, run)
    events = _train(tiny_config(**{"train.iters": 4}), demo_folder, run, resume=True)
    progress = [e.iteration for e in events if e.kind == "progress"]
    assert progress == [3, 4]
    assert torch.load(run / "model.pt", weights_only=False)["iteration"] == 4


def test_resume_without_checkpoint_is_a_clear_error(demo_folder, tmp_path):
    with pytest.raises(TrainingError, match="checkpoint"):
        Trainer(tiny_config(), demo_folder, tmp_path / "empty").run(resume=True)


def test_a_trained_run_is_never_overwritten_without_resume(demo_folder, tmp_path):
    run = tmp_path / "run"
    _train(tiny_config(**{"train.iters": 1}), demo_folder, run)
    before = (run / "model.pt").read_bytes()
    with pytest.raises(TrainingError, match="--resume"):
        Trainer(tiny_config(), demo_folder, run).run()
    assert (run / "model.pt").read_bytes() == before


def test_cancel_stops_and_keeps_a_checkpoint(demo_folder, tmp_path):
    run = tmp_path / "run"
    cfg = tiny_config(**{"train.iters": 1000, "train.checkpoint_every": 0})
    trainer = Trainer(cfg, demo_folder, run)
    events: list[TrainEvent] = []

    def on_event(event):
        events.append(event)
        if event.kind == "progress" and event.iteration == 2:
            trainer.cancel()

    trainer.on_event = on_event
    trainer.run()
    assert events[-1].kind == "cancelled"
    assert torch.load(run / "checkpoint.pt", weights_only=False)["iteration"] == 2
    assert not (run / "model.pt").exists()
    assert Predictor.from_run(run).class_names  # a stopped run is still usable


def test_divergence_stops_with_a_clear_message(demo_folder, tmp_path):
    cfg = tiny_config(**{"train.lr": 1e30, "train.grad_clip": 0.0, "train.iters": 50})
    with pytest.raises(TrainingError, match="diverged"):
        Trainer(cfg, demo_folder, tmp_path / "run").run()


def test_verified_masks_replace_pseudo_labels(demo_folder, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(demo_folder, data)
    folder = open_folder(data)
    sample = folder.samples[0]
    gt = load_mask(sample.gt_mask)
    save_palette_png(data / "verified" / f"{sample.stem}.png", gt)
    folder = open_folder(data)
    assert folder.samples[0].verified_mask is not None

    seen = []
    import oste_core.engine.steps as steps_module

    real = steps_module.compute_losses

    def spy(out, batch, pseudo, cfg, iteration):
        seen.append((batch["has_mask"].clone(), batch["mask"].clone(), pseudo.clone()))
        return real(out, batch, pseudo, cfg, iteration)

    steps_module.compute_losses = spy
    try:
        _train(tiny_config(**{"train.iters": 12}), data, tmp_path / "run")
    finally:
        steps_module.compute_losses = real
    hits = [(m, p) for has, mask, p in seen for h, m, p in zip(has, mask, p) if h]
    assert hits, "the verified image was never sampled"
    for mask, pseudo in hits:
        assert torch.equal(mask, pseudo)


def test_predictor_returns_every_layer(demo_folder, tmp_path):
    run = tmp_path / "run"
    _train(tiny_config(), demo_folder, run)
    predictor = Predictor.from_run(run, device="cpu")
    folder = open_folder(demo_folder)
    sample = folder.samples[0]
    image = load_image(sample.image_path)
    tags = folder.tag_indices(sample)
    pred = predictor.predict(image, tags, key=sample.stem)
    h, w = image.shape[:2]
    k = len(folder.class_names)
    for layer in (pred.cam, pred.merged_cam, pred.enhanced_cam):
        assert layer.shape == (k, h, w) and layer.min() >= 0 and layer.max() <= 1
    assert pred.pseudo_label.shape == pred.seg.shape == pred.confidence.shape == (h, w)
    allowed = {0, 255, *tags}
    assert set(np.unique(pred.pseudo_label)) <= allowed
    assert set(np.unique(pred.seg)) <= {0, *tags}
    assert 0.0 <= pred.uncertainty <= 1.0
    assert predictor.predict(image, tags, key=sample.stem) is pred  # cached
    results = list(predictor.predict_folder(folder))
    assert len(results) == len(folder.samples)


def test_a_run_saved_with_unknown_settings_loads_with_a_warning(demo_folder, tmp_path, caplog):
    run = tmp_path / "run"
    _train(tiny_config(**{"train.iters": 1}), demo_folder, run)
    state = torch.load(run / "model.pt", weights_only=False)
    state["config"]["train"]["from_a_newer_version"] = True  # e.g. a run made by a later OSTE Studio
    torch.save(state, run / "model.pt")
    with caplog.at_level("WARNING"):
        predictor = Predictor.from_run(run, device="cpu")
    assert "train.from_a_newer_version" in caplog.text and "model.pt" in caplog.text
    assert predictor.class_names == open_folder(demo_folder).class_names


def test_predictor_names_a_bad_run_folder(tmp_path):
    with pytest.raises(RunError, match="model.pt"):
        Predictor.from_run(tmp_path)
    (tmp_path / "model.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(RunError, match="model.pt"):
        Predictor.from_run(tmp_path)


def test_trainer_can_run_in_a_thread_and_be_cancelled(demo_folder, tmp_path):
    cfg = tiny_config(**{"train.iters": 1000})
    trainer = Trainer(cfg, demo_folder, tmp_path / "run")
    thread = threading.Thread(target=trainer.run)
    thread.start()
    trainer.cancel()
    thread.join(timeout=120)
    assert not thread.is_alive()
    assert (tmp_path / "run" / "checkpoint.pt").exists()
