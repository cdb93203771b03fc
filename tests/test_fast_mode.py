"""The fast mode (frozen backbone, cached features), incremental updates and the full-mask suggestion."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import tiny_config
from oste_core.config import ModelConfig
from oste_core.data import open_folder
from oste_core.engine.feature_cache import CACHE_DIR, SUFFIX
from oste_core.engine.predictor import Predictor
from oste_core.engine.trainer import Trainer
from oste_core.models.modules.crf import make_crf
from oste_core.suggest.recipe import make_suggestion
from oste_core.suggest.fitting import fit_pixel_probe
from oste_core.suggest.store import STORE_DIR


def fast_config(**overrides):
    return tiny_config(**{"train.freeze_backbone": True, "train.fast_max_side": 48, "train.checkpoint_every": 0,
                          **overrides})


@pytest.fixture
def own_folder(demo_folder, tmp_path) -> Path:
    """A private copy of the demo folder (these tests edit images and verified masks)."""
    return Path(shutil.copytree(demo_folder, tmp_path / "data"))


def cache_files(run: Path) -> set[str]:
    return {p.name for p in (run / CACHE_DIR).glob(f"*{SUFFIX}")}


def metric_lines(run: Path) -> list[dict]:
    """The run's progress reports (metrics.jsonl), one dict per line."""
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_fast_mode_caches_each_image_once_and_trains_only_the_heads(own_folder, tmp_path):
    run = tmp_path / "run"
    events = []
    Trainer(fast_config(), own_folder, run, on_event=events.append).run()
    assert len(cache_files(run)) == len(open_folder(own_folder).samples)
    assert any(e.kind == "features" for e in events)
    state = torch.load(run / "model.pt", weights_only=False)
    fresh = state["model"]
    assert state["config"]["train"]["freeze_backbone"] is True
    folder = open_folder(own_folder)
    tagged = {index for sample in folder.samples for index in folder.tag_indices(sample)}
    colocalisation = state["colocalisation"]  # fitted on the cached features at the end of training
    assert set(colocalisation["classes"]) == tagged
    assert colocalisation["directions"].shape == (len(tagged), colocalisation["means"].shape[1])
    assert Predictor.from_run(run).priors.colocalisation.classes == sorted(tagged)
    # the backbone is the ImageNet one: the same weights before and after training
    from oste_core.models.backbones import build_backbone

    imagenet = build_backbone("efficientnet_lite0", 8, "auto", frozen_bn=True).state_dict()
    name = "_blocks.3._project_conv.weight"
    assert torch.equal(fresh[f"backbone.{name}"], imagenet[name])


def test_feature_cache_is_invalidated_when_an_image_or_a_setting_changes(own_folder, tmp_path):
    run = tmp_path / "run"
    Trainer(fast_config(), own_folder, run).run()
    before = cache_files(run)
    image = open_folder(own_folder).samples[0].image_path
    pixels = np.asarray(Image.open(image).convert("RGB")).copy()
    pixels[:8, :8] = 255 - pixels[:8, :8]
    Image.fromarray(pixels).save(image)
    os.utime(image, ns=(1, 1))  # a different modification time, whatever the file system's resolution
    shutil.rmtree(run)
    Trainer(fast_config(), own_folder, run).run()
    after = cache_files(run)
    assert len(before - after) == 1 and len(after - before) == 1  # only the edited image was recomputed

    run2 = tmp_path / "run2"
    Trainer(fast_config(**{"train.fast_max_side": 40}), own_folder, run2).run()
    assert not cache_files(run2) & after  # another working size: other features


def test_a_corrupt_cache_file_is_rebuilt_not_fatal(own_folder, tmp_path):
    run = tmp_path / "run"
    Trainer(fast_config(), own_folder, run).run()
    victim = sorted((run / CACHE_DIR).glob(f"*{SUFFIX}"))[0]
    victim.write_bytes(b"not a torch file")
    messages = []
    Trainer(fast_config(**{"train.iters": 6}), own_folder, run, on_event=lambda e: messages.append(e.message)).run(
        resume=True)
    assert any("rebuilt" in m and victim.name in m for m in messages)
    assert np.load(victim).files  # readable again


def test_progress_comes_every_iteration_with_the_losses(own_folder, tmp_path):
    events = []
    Trainer(fast_config(**{"train.iters": 5, "train.log_every": 10}), own_folder, tmp_path / "run",
            on_event=events.append).run()
    progress = [e for e in events if e.kind == "progress"]
    # log_every 10 would report at 1 and 5 only; the cached-feature steps take well under a second each,
    # so this checks the CPU preset's log_every below instead
    assert [e.iteration for e in progress][0] == 1 and progress[-1].iteration == 5
    events.clear()
    from oste_core.config import FAST_PRESET

    Trainer(fast_config(**{"train.iters": 5, "train.log_every": FAST_PRESET["train.log_every"]}), own_folder,
            tmp_path / "run2", on_event=events.append).run()
    progress = [e for e in events if e.kind == "progress"]
    assert [e.iteration for e in progress] == [1, 2, 3, 4, 5]
    assert all("total" in e.losses and np.isfinite(e.losses["total"]) for e in progress)


def _verified_share(run: Path, folder_path: Path, stem: str, label: int) -> float:
    folder = open_folder(folder_path)
    sample = folder.find(stem)
    prediction = Predictor.from_run(run).predict(
        np.asarray(Image.open(sample.image_path).convert("RGB")), folder.tag_indices(sample))
    return float((prediction.seg == label).mean())


def test_update_learns_from_the_verified_masks(own_folder, tmp_path):
    run = tmp_path / "run"
    Trainer(fast_config(**{"train.iters": 2}), own_folder, run).run()
    folder = open_folder(own_folder)
    sample = folder.samples[0]
    label = folder.tag_indices(sample)[0]
    before = _verified_share(run, own_folder, sample.stem, label)
    mask = np.full(Image.open(sample.image_path).size[::-1], label, dtype=np.uint8)
    target = folder.verified_path(sample)
    target.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(mask).save(target)
    weights_before = (run / "model.pt").stat().st_mtime_ns
    fit_before = torch.load(run / "model.pt", weights_only=False)["colocalisation"]
    events = []
    Trainer(fast_config(), own_folder, run, on_event=events.append).run_update(budget_s=4.0)
    assert (run / "model.pt").stat().st_mtime_ns != weights_before
    fit_after = torch.load(run / "model.pt", weights_only=False)["colocalisation"]
    assert torch.equal(fit_after["directions"], fit_before["directions"])  # frozen features: the update keeps the fit
    assert "1 verified or corrected image" in events[0].message
    assert [e.kind for e in events][-1] == "done"
    after = _verified_share(run, own_folder, sample.stem, label)
    assert after > before + 0.2, (before, after)


def test_update_of_a_missing_run_is_a_clear_error(own_folder, tmp_path):
    from oste_core.engine.trainer import TrainingError

    with pytest.raises(TrainingError, match="config.yaml"):
        Trainer(fast_config(), own_folder, tmp_path / "nothing").run_update(5.0)


# ------------------------------------------------------------------ suggestion
def _suggestion_inputs(seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    image = (torch.rand(3, 40, 48, generator=generator) * 255).to(torch.uint8)
    seg_logits = torch.randn(5, 40, 48, generator=generator)  # K = 4 classes + background
    cams = torch.rand(4, 5, 6, generator=generator)
    pseudo = torch.full((40, 48), 255, dtype=torch.long)
    return image, seg_logits, cams, pseudo


def test_suggestion_labels_every_pixel_with_background_or_a_tag():
    image, seg_logits, cams, pseudo = _suggestion_inputs()
    crf = make_crf("torch", iters=3)
    label, confidence = make_suggestion(seg_logits, cams, image, [2, 4], pseudo, ModelConfig(), crf)
    assert label.shape == (40, 48) and confidence.shape == (40, 48)
    assert set(label.unique().tolist()) <= {0, 2, 4}
    assert float(confidence.min()) >= 0.0 and float(confidence.max()) <= 1.0


def test_suggestion_keeps_confident_fbe_pixels_and_a_verified_mask_wins():
    image, seg_logits, cams, pseudo = _suggestion_inputs(1)
    pseudo[:10] = 2
    verified = torch.full((40, 48), 255, dtype=torch.long)
    verified[:, :5] = 4
    label, confidence = make_suggestion(seg_logits, cams, image, [2, 4], pseudo, ModelConfig(), make_crf("torch", 3),
                                        verified)
    assert (label[:10, 5:] == 2).all()
    assert (label[:, :5] == 4).all() and (confidence[:, :5] == 1.0).all()


def test_suggestion_without_tags_is_all_background():
    image, seg_logits, cams, pseudo = _suggestion_inputs(2)
    label, confidence = make_suggestion(seg_logits, cams, image, [], pseudo, ModelConfig(), make_crf("torch", 3))
    assert (label == 0).all() and (confidence == 1.0).all()


def test_prediction_carries_a_full_suggestion_and_the_verified_mask_wins(own_folder, tmp_path):
    run = tmp_path / "run"
    Trainer(fast_config(**{"train.iters": 2}), own_folder, run).run()
    folder = open_folder(own_folder)
    predictor = Predictor.from_run(run)
    sample = folder.samples[1]
    tags = folder.tag_indices(sample)
    cached = cache_files(run)
    prediction = predictor.predict_sample(folder, sample)
    assert cache_files(run) == cached  # the run's cached features are reused, not computed again
    assert prediction.suggestion.shape == prediction.pseudo_label.shape
    assert set(np.unique(prediction.suggestion).tolist()) <= {0, *tags}
    assert 0.0 <= prediction.suggestion_confidence.min() and prediction.suggestion_confidence.max() <= 1.0
    sure = prediction.pseudo_label != 255
    assert sure.any() and (prediction.suggestion[sure] == prediction.pseudo_label[sure]).all()  # FBE's sure pixels kept

    size = Image.open(sample.image_path).size[::-1]
    verified = np.full(size, 255, dtype=np.uint8)
    verified[: size[0] // 2] = tags[0]
    target = folder.verified_path(sample)
    target.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(verified).save(target)
    sample = open_folder(own_folder).find(sample.stem)
    again = predictor.predict_sample(open_folder(own_folder), sample)  # a new verified mask: not the cached result
    top = again.suggestion[: again.suggestion.shape[0] // 2 - 1]
    assert (top == tags[0]).all()


def test_fast_warmup_steps_train_the_classifier_only(own_folder, tmp_path):
    run = tmp_path / "run"
    Trainer(fast_config(**{"train.iters": 3, "loss.seg_warmup_iters": 2}), own_folder, run).run()
    lines = metric_lines(run)
    assert [line["iteration"] for line in lines] == [1, 2, 3]
    assert all(line["seg"] == 0 and line["energy"] == 0 and line["affinity"] == 0 for line in lines[:2])
    assert all(line["cls"] > 0 for line in lines)
    assert lines[2]["seg"] > 0


def test_the_cpu_preset_trains_lem_tiles_without_eq16_and_predicts_a_merged_cam(own_folder, tmp_path):
    from oste_core.config import FAST_PRESET

    run = tmp_path / "run"
    lem = {key: FAST_PRESET[key] for key in ("model.use_lem", "loss.w_mae")}
    Trainer(fast_config(**{"train.iters": 3, "loss.seg_warmup_iters": 2, **lem}), own_folder, run).run()
    lines = metric_lines(run)
    warmup = lines[:2]  # classifier-only steps: total = cls + tile (+ w_mae * mae)
    assert all(line["tile"] > 0 and line["mae"] > 0 for line in warmup)
    assert all(line["total"] == pytest.approx(line["cls"] + line["tile"], rel=1e-5) for line in warmup)
    folder = open_folder(own_folder)
    prediction = Predictor.from_run(run).predict_sample(folder, folder.samples[0])
    assert prediction.merged_cam.max() > 0  # the tiles' maps reach the prediction


def _with_and_without(predictor: Predictor, folder, sample, weight: str):
    """The sample's prediction, then the same with the model setting ``weight`` at 0."""
    with_it = predictor.predict_sample(folder, sample)
    assert set(np.unique(with_it.suggestion)) <= {0, *folder.tag_indices(sample)}
    setattr(predictor.cfg.model, weight, 0.0)
    predictor.clear_cache()
    return with_it, predictor.predict_sample(folder, sample)


def test_a_run_of_imagenet_classes_saves_their_prior_and_the_suggestion_uses_it(own_folder, tmp_path):
    renamed = {"circle": "car", "square": "dog"}  # two of the demo's shapes get VOC names ImageNet has
    (own_folder / "priors.yaml").unlink()  # the demo turns the prior off
    for name in ("classes.txt", "tags.csv"):
        text = (own_folder / name).read_text()
        for old, new in renamed.items():
            text = text.replace(old, new)
        (own_folder / name).write_text(text)
    run = tmp_path / "run"
    Trainer(fast_config(**{"train.iters": 2}), own_folder, run).run()
    prior = torch.load(run / "model.pt", weights_only=False)["imagenet_prior"]
    assert sorted(prior["classes"]) == [1, 2] and prior["weight"].shape == (1000, 1280)
    predictor = Predictor.from_run(run)
    assert sorted(predictor.priors.imagenet_prior.classes) == [1, 2]
    folder = open_folder(own_folder)
    sample = next(s for s in folder.samples if 1 in folder.tag_indices(s) or 2 in folder.tag_indices(s))
    with_prior, without_prior = _with_and_without(predictor, folder, sample, "imagenet_prior_weight")
    assert not np.array_equal(with_prior.suggestion_confidence, without_prior.suggestion_confidence)
    # FBE reads the same mixed maps as the suggestion: the prior changes the pseudo-label too
    assert not np.array_equal(with_prior.pseudo_label, without_prior.pseudo_label)
    Trainer(fast_config(), own_folder, run).run_update(budget_s=2.0)
    kept = torch.load(run / "model.pt", weights_only=False)["imagenet_prior"]
    assert torch.equal(kept["weight"], prior["weight"])  # an update keeps the run's prior


def test_the_pixel_probe_is_taught_by_the_suggestions_and_verified_masks_teach_it(own_folder, tmp_path):
    run = tmp_path / "run"
    events = []
    Trainer(fast_config(**{"train.iters": 2}), own_folder, run, on_event=events.append).run()
    probe = torch.load(run / "model.pt", weights_only=False)["pixel_probe"]
    folder = open_folder(own_folder)
    classes = len(folder.class_names)
    assert probe["weight"].shape[0] == classes + 1 and probe["mean"].shape == probe["std"].shape
    probe_events = [e for e in events if e.kind == "probe"]
    assert probe_events and probe_events[-1].iteration == probe_events[-1].total == len(folder.samples)
    predictor = Predictor.from_run(run)
    assert predictor.priors.pixel_probe is not None
    sample = folder.samples[0]
    tags = folder.tag_indices(sample)
    prediction = predictor.predict_sample(folder, sample)
    assert set(np.unique(prediction.suggestion)) <= {0, *tags}
    # a verified mask is the probe's best teacher: all its pixels are examples (here: left half the tag,
    # right half background)
    label = tags[0]
    mask = np.zeros(Image.open(sample.image_path).size[::-1], dtype=np.uint8)
    mask[:, : mask.shape[1] // 2] = label
    target = folder.verified_path(sample)
    target.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(mask).save(target)
    taught, teaching = fit_pixel_probe(predictor, open_folder(own_folder), [open_folder(own_folder).samples[0]])
    assert teaching.stems == [sample.stem] and len(teaching.labels) > 0
    descriptors = predictor._maps(None, sample.image_path)[1]["descriptors"]
    probabilities = taught.probabilities(descriptors, tags)
    seen = probabilities[:, ::2, ::2]  # the cells it learned from (every other one)
    half = seen.shape[2] // 2
    assert float(seen[label][:, :half].min()) > 0.9 and float(seen[0][:, half + 1:].min()) > 0.9
    assert fit_pixel_probe(predictor, folder, cancel=lambda: True) is None


def test_a_retrain_prunes_stale_cache_files_but_not_another_process_write_in_progress(own_folder, tmp_path):
    run = tmp_path / "run"
    Trainer(fast_config(**{"train.iters": 1}), own_folder, run).run()
    stale = run / CACHE_DIR / "0123456789abcdef01234567.pt"
    in_progress = run / CACHE_DIR / ".0123456789abcdef01234567.pt.x1y2z3.tmp.pt"  # a second DDP rank's atomic write
    stale.write_bytes(b"old")
    in_progress.write_bytes(b"half")
    Trainer(fast_config(), own_folder, run).run_update(budget_s=1.0)  # an update re-reads the cache too
    assert not stale.exists() and in_progress.exists()


def test_predictions_are_made_at_the_prediction_scale_with_their_own_cache(own_folder, tmp_path):
    run = tmp_path / "run"
    Trainer(fast_config(**{"train.iters": 2, "train.fast_predict_scale": 1.5}), own_folder, run).run()
    folder = open_folder(own_folder)
    predict_cache = run / CACHE_DIR / "x1.5"
    # the end of training stored every image's state at the prediction scale, which replaces its features there
    assert len(list((run / STORE_DIR).glob("*.state.npz"))) == len(folder.samples) == len(cache_files(run))
    assert not list(predict_cache.glob(f"*{SUFFIX}"))

    sample = folder.samples[0]
    working = max(Image.open(sample.image_path).size)
    assert working > 48  # the demo images are downscaled to the working size 48, then enlarged by 1.5
    predictor = Predictor.from_run(run)
    prediction = predictor.predict_sample(folder, sample)
    for layer in (prediction.suggestion, prediction.pseudo_label, prediction.cam[0]):
        assert max(layer.shape) == 72
    assert not list(predict_cache.glob(f"*{SUFFIX}"))  # read from the store, no backbone pass
    predictor.cfg.model.colocalisation_weight = 0.0  # another recipe: the stored state does not apply
    predictor.clear_cache()
    assert max(predictor.predict_sample(folder, sample).suggestion.shape) == 72
    assert len(list(predict_cache.glob(f"*{SUFFIX}"))) == 1  # computed from the prediction-scale features
    computed = np.load(next(predict_cache.glob(f"*{SUFFIX}")))
    assert computed.files and not [name for name in computed.files if name.startswith("tile")]
    assert prediction.merged_cam.max() > 0  # LEM merged from the working-size tiles

    stale = predict_cache / f"0123456789abcdef01234567{SUFFIX}"
    stale.write_bytes(b"old")
    for weights in run.glob("*.pt"):  # a retrain in the same folder, its feature caches kept
        weights.unlink()
    Trainer(fast_config(**{"train.iters": 2, "train.fast_predict_scale": 1.5}), own_folder, run).run()
    assert not stale.exists()  # a retrain drops prediction-scale features no image needs


def test_prediction_scale_one_predicts_at_the_working_size(own_folder, tmp_path):
    run = tmp_path / "run"
    Trainer(fast_config(**{"train.iters": 2, "train.fast_predict_scale": 1.0}), own_folder, run).run()
    folder = open_folder(own_folder)
    prediction = Predictor.from_run(run).predict_sample(folder, folder.samples[0])
    assert max(prediction.suggestion.shape) == 48
    assert not [p for p in (run / CACHE_DIR).iterdir() if p.is_dir()]


def test_a_fast_run_asked_for_the_maf_refinement_saves_it_and_the_suggestion_reads_it(own_folder, tmp_path):
    run = tmp_path / "run"
    events = []
    refining = {"model.suggestion_maf_weight": 0.5}
    Trainer(fast_config(**{"train.iters": 2, **refining}), own_folder, run, on_event=events.append).run()
    state = torch.load(run / "model.pt", weights_only=False)
    assert not torch.equal(state["maf_refinement"]["theta.weight"], state["model"]["maf.theta.weight"])
    affinity_events = [e for e in events if e.kind == "affinity"]
    assert affinity_events and affinity_events[-1].iteration == affinity_events[-1].total
    predictor = Predictor.from_run(run)
    assert predictor.priors.maf_refinement is not None
    folder = open_folder(own_folder)
    refined, plain = _with_and_without(predictor, folder, folder.samples[0], "suggestion_maf_weight")
    assert not np.array_equal(refined.suggestion_confidence, plain.suggestion_confidence)
    # the run's own MAF is unchanged (the plain state stores the CAMs in uint8 steps of their peak)
    np.testing.assert_allclose(refined.enhanced_cam, plain.enhanced_cam, atol=1 / 255)
    Trainer(fast_config(**refining), own_folder, run).run_update(budget_s=2.0)
    kept = torch.load(run / "model.pt", weights_only=False)["maf_refinement"]
    assert torch.equal(kept["theta.weight"], state["maf_refinement"]["theta.weight"])  # an update keeps it


@pytest.mark.parametrize("overrides", [{}, {"model.suggestion_maf_weight": 0.5, "model.use_maf": False}],
                         ids=["default (off)", "without MAF"])
def test_a_fast_run_has_no_maf_refinement_by_default_or_without_maf(own_folder, tmp_path, overrides):
    run = tmp_path / "run"
    Trainer(fast_config(**{"train.iters": 2, **overrides}), own_folder, run).run()
    assert "maf_refinement" not in torch.load(run / "model.pt", weights_only=False)
    assert Predictor.from_run(run).priors.maf_refinement is None
