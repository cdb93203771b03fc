"""Shared fixtures: a small synthetic labelled folder and a tiny-but-real training config."""
from __future__ import annotations

from pathlib import Path

import pytest

from oste_core.config import OSTEConfig, apply_overrides


def tiny_config(**overrides) -> OSTEConfig:
    """A real OSTE config (every module on) shrunk to run in seconds on a laptop CPU."""
    cfg = OSTEConfig()
    apply_overrides(cfg, {
        "train.iters": 4, "train.batch": 2, "train.crop": 64, "train.workers": 0,
        "train.log_every": 1, "train.checkpoint_every": 2, "model.cam_scales": (1.0,),
        "model.crf_backend": "torch", "model.crf_iters": 3,
    })
    apply_overrides(cfg, overrides)
    return cfg


@pytest.fixture(scope="session")
def demo_folder(tmp_path_factory) -> Path:
    """12 synthetic 64 px images with tags, classes and ground-truth masks (written once per session)."""
    from oste_core.data import write_demo_data

    return write_demo_data(tmp_path_factory.mktemp("demo") / "data", n=12, size=64, seed=0)
