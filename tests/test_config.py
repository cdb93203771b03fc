"""Typed config: paper defaults, overrides from the CLI, YAML/JSON round trips, the CPU preset."""
from __future__ import annotations

import pytest

from oste_core.config import FAST_PRESET, OSTEConfig, apply_overrides, default_config


def test_paper_defaults():
    cfg = OSTEConfig()
    assert (cfg.train.crop, cfg.train.batch, cfg.train.iters) == (321, 2, 10000)
    assert cfg.train.scale_range == (0.5, 1.5) and cfg.model.cam_scales == (0.5, 1.0, 1.5, 2.0)
    assert (cfg.model.gamma, cfg.model.alpha, cfg.model.lem_grids, cfg.model.maf_stages) == (4.0, 0.8, (2, 4), (3, 4, 5))
    assert (cfg.loss.sigma_xy, cfg.loss.sigma_rgb) == (100.0, 15.0)


def test_overrides_are_typed():
    cfg = apply_overrides(OSTEConfig(), ["model.alpha=0.7", "model.use_maf=false", "train.iters=5",
                                         "model.lem_grids=2,3", "model.backbone=resnet50"])
    assert cfg.model.alpha == 0.7 and cfg.model.use_maf is False and cfg.train.iters == 5
    assert cfg.model.lem_grids == (2, 3) and cfg.model.backbone == "resnet50"
    with pytest.raises(KeyError, match="model.nope"):
        apply_overrides(cfg, ["model.nope=1"])
    with pytest.raises(ValueError, match="train.iters"):
        apply_overrides(cfg, ["train.iters=many"])
    with pytest.raises(ValueError, match="key=value"):
        apply_overrides(cfg, ["train.iters"])


@pytest.mark.parametrize("name", ["config.yaml", "config.json"])
def test_save_load_round_trip(tmp_path, name):
    cfg = apply_overrides(OSTEConfig(), {"model.cam_scales": (1.0, 2.0), "train.lr": 0.003})
    loaded = OSTEConfig.load(cfg.save(tmp_path / name))
    assert loaded == cfg


def test_the_fast_mode_is_the_default_on_every_device_and_full_fine_tuning_is_a_choice():
    cpu, gpu = default_config("cpu"), default_config("cuda")
    assert cpu == gpu and gpu.train.freeze_backbone  # the CUDA default is the fast mode, the CPU's preset
    assert gpu.train.iters == FAST_PRESET["train.iters"] < OSTEConfig().train.iters
    assert gpu.model.cam_scales == (1.0,) and gpu.model.alpha == OSTEConfig().model.alpha
    assert default_config("cuda", "full") == default_config("cuda", "paper") == OSTEConfig()
    full_cpu = default_config("cpu", "full")
    assert not full_cpu.train.freeze_backbone and full_cpu.train.iters == 300
    assert default_config("cpu", "paper") == OSTEConfig()
    with pytest.raises(ValueError, match="unknown training mode"):
        default_config("cpu", "fastest")
