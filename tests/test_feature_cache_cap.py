"""The feature cache on disk: a lossless compressed file per image, and the cap on ``features/`` (LRU, the
prediction-scale files first, recomputed on a miss)."""
from __future__ import annotations

import math
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import tiny_config
from oste_core.data import open_folder
from oste_core.engine.feature_cache import (AUTO_MB_PER_IMAGE, CACHE_DIR, SUFFIX, FeatureCache, backbone_identity,
                                            cache_cap_mb, pack, unpack)
from oste_core.engine.predictor import Predictor
from oste_core.engine.trainer import Trainer
from oste_core.engine.run_folder import RunFolder
from oste_core.models import OSTEModel
from oste_core.utils.io import folder_size


@pytest.fixture(scope="module")
def model() -> OSTEModel:
    cfg = tiny_config()
    return OSTEModel(cfg.model, num_classes=4).eval()


def make_cache(run: Path, model: OSTEModel, scale: float = 1.0, cap_mb: float = math.inf) -> FeatureCache:
    return FeatureCache(run, model, backbone_identity(tiny_config().model), 48, 1024, torch.device("cpu"),
                        scale=scale, cap_mb=cap_mb)


def same_features(a, b) -> bool:
    def packs(features):
        return [(key, value) for maps in (features.stages, features.tiles) for index in sorted(maps)
                for key, value in sorted(maps[index].items())]

    return torch.equal(a.image_uint8, b.image_uint8) and all(
        ka == kb and torch.equal(va, vb) for (ka, va), (kb, vb) in zip(packs(a), packs(b), strict=True))


def test_a_file_read_back_holds_the_same_features_and_not_the_image(demo_folder, tmp_path, model):
    image = open_folder(demo_folder).samples[0].image_path
    computed = make_cache(tmp_path, model).get(image)
    file = make_cache(tmp_path, model).file(image)
    assert file.suffix == SUFFIX and not any("image" in name for name in np.load(file).files)
    read = make_cache(tmp_path, model).get(image)  # a new cache: nothing in memory, so from the file
    assert same_features(computed, read)


@pytest.mark.parametrize("bits, signed, step", [(8, False, 1 / 255), (4, False, 1 / 15), (8, True, 1 / 127)])
def test_packed_features_are_within_about_half_a_step_of_each_channels_peak(bits, signed, step):
    features = torch.rand(3, 5, 7) * torch.tensor([1.0, 20.0, 0.01])[:, None, None]  # an odd count: two nibbles a byte
    if signed:
        features = features - 0.5 * features.amax()
    packed = pack(features, bits=bits)
    restored = unpack(packed, torch.device("cpu"))
    peak = features.abs().flatten(1).amax(dim=1)[:, None, None]
    assert restored.shape == features.shape
    assert ((restored - features).abs() <= peak * step * 0.65).all()  # half a step, the float16 scale's rounding
    assert (("int8" if signed else "uint8" if bits == 8 else "uint4") in packed)


def test_the_cap_keeps_the_most_recently_used_files_and_a_miss_is_recomputed(demo_folder, tmp_path, model):
    images = [s.image_path for s in open_folder(demo_folder).samples[:6]]
    probe = make_cache(tmp_path / "probe", model)
    probe.get(images[0])
    one_file = probe.file(images[0]).stat().st_size
    cap_mb = 3.5 * one_file / 2**20
    cache = make_cache(tmp_path, model, cap_mb=cap_mb)
    first = cache.get(images[0])
    for image in images[1:]:
        cache.get(image)
    os.utime(cache.file(images[3]), ns=(1, 1))  # the oldest use now: deleted first at the next write
    cache.get(images[1])  # from memory: no write, nothing deleted
    assert folder_size(tmp_path / CACHE_DIR) <= cap_mb * 2**20
    kept = {image for image in images if cache.file(image).exists()}
    assert kept and images[-1] in kept and images[0] not in kept
    fresh = make_cache(tmp_path, model, cap_mb=cap_mb)
    assert not fresh.has(images[0]) and same_features(fresh.get(images[0]), first)  # recomputed, the same
    assert fresh.file(images[0]).exists() and not fresh.file(images[3]).exists()


def test_prediction_scale_files_give_way_to_the_working_size_ones(demo_folder, tmp_path, model):
    images = [s.image_path for s in open_folder(demo_folder).samples[:5]]
    probe = make_cache(tmp_path / "probe", model)
    sizes = []
    for image in images:
        probe.get(image)
        sizes.append(probe.file(image).stat().st_size / 2**20)
    working = make_cache(tmp_path, model, cap_mb=sum(sizes[:3]) + 0.5 * sizes[0])
    for image in images[:3]:
        working.get(image)
    scaled = make_cache(tmp_path, model, scale=1.5, cap_mb=sum(sizes[:3]) + 0.5 * sizes[0])
    scaled.get(images[0])  # no room beside the working-size files (a scaled file is larger): it deletes itself
    assert all(working.file(image).exists() for image in images[:3]) and not scaled.file(images[0]).exists()
    scaled = make_cache(tmp_path, model, scale=1.5, cap_mb=1e6)
    scaled.get(images[1])  # room enough: it stays...
    assert scaled.file(images[1]).exists()
    make_cache(tmp_path, model, cap_mb=sum(sizes) + 0.1 * sizes[0]).get(images[3])
    make_cache(tmp_path, model, cap_mb=sum(sizes) + 0.1 * sizes[0]).get(images[4])  # ...until working-size ones need it
    assert not scaled.file(images[1]).exists() and all(working.file(image).exists() for image in images)


def test_a_training_keeps_its_run_folder_under_the_cap_and_still_predicts(demo_folder, tmp_path):
    data = Path(shutil.copytree(demo_folder, tmp_path / "data"))
    cfg = tiny_config(**{"train.freeze_backbone": True, "train.fast_max_side": 48, "train.checkpoint_every": 0,
                         "train.iters": 2, "train.feature_cache_mb": 0.05})
    run = tmp_path / "run"
    Trainer(cfg, data, run).run()
    assert 0 < folder_size(run / CACHE_DIR) <= 0.05 * 2**20
    assert "MB per photo, 12 photos; features/ capped at 0 MB" in RunFolder(run).disk_usage()  # `oste info RUN`
    folder = open_folder(data)
    prediction = Predictor.from_run(run).predict_sample(folder, folder.samples[0])  # evicted features: recomputed
    assert prediction.suggestion.shape == (prediction.cam.shape[1], prediction.cam.shape[2])
    assert folder_size(run / CACHE_DIR) <= 0.05 * 2**20
    Trainer(cfg, data, run).run_update(budget_s=1.0)  # an update recomputes what the cap dropped
    assert folder_size(run / CACHE_DIR) <= 0.05 * 2**20


def test_the_default_cap_is_per_image_of_the_folder():
    assert cache_cap_mb(0, 180) == AUTO_MB_PER_IMAGE * 180
    assert cache_cap_mb(500, 180) == 500 and math.isinf(cache_cap_mb(-1, 180))
