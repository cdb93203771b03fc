"""Damaged run files (a truncated model.pt, checkpoint.pt or config.yaml) are named with the action to take,
and the action works. (A damaged feature cache file is rebuilt: tests/test_fast_mode.py.)"""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from conftest import tiny_config
from oste_core.engine.predictor import Predictor
from oste_core.engine.run_folder import RunError, RunFolder
from oste_core.engine.trainer import Trainer, TrainingError


@pytest.fixture(scope="module")
def trained(tmp_path_factory, demo_folder) -> Path:
    run = tmp_path_factory.mktemp("runfiles") / "run"
    Trainer(tiny_config(**{"train.iters": 2, "train.checkpoint_every": 1}), demo_folder, run).run()
    return run


@pytest.fixture
def run(trained, tmp_path) -> Path:
    return Path(shutil.copytree(trained, tmp_path / "run"))


def truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


@pytest.mark.parametrize("keep", [0.0, 0.5, 0.99])
def test_a_truncated_model_is_named_with_the_action_and_resuming_rebuilds_it(run, demo_folder, keep):
    truncate(run / "model.pt", keep)
    with pytest.raises(RunError) as caught:
        Predictor.from_run(run, device="cpu")
    message = str(caught.value)
    assert str(run / "model.pt") in message and "damaged or incomplete" in message
    assert "--resume" in message and "train the run again" in message  # a finished run keeps no checkpoint.pt
    assert "internal miniz error" not in message and "please report" not in message.lower()
    (run / "model.pt").unlink()  # what the message says
    Trainer(tiny_config(**{"train.iters": 2}), demo_folder, run).run(resume=True)
    assert Predictor.from_run(run, device="cpu").class_names


def test_a_truncated_checkpoint_is_named_with_the_action(run, demo_folder):
    (run / "model.pt").rename(run / "checkpoint.pt")  # a stopped run: a checkpoint, no model.pt yet
    truncate(run / "checkpoint.pt")
    with pytest.raises(TrainingError) as caught:
        Trainer(tiny_config(**{"train.iters": 3}), demo_folder, run).run(resume=True)
    message = str(caught.value)
    assert str(run / "checkpoint.pt") in message and "damaged or incomplete" in message and "delete it" in message
    (run / "checkpoint.pt").unlink()
    events = []
    Trainer(tiny_config(**{"train.iters": 3}), demo_folder, run, on_event=events.append).run(resume=True)
    assert any("starts again from iteration 0" in e.message for e in events)
    assert torch.load(run / "model.pt", weights_only=False)["iteration"] == 3


@pytest.mark.parametrize("keep", [0.0, 0.6])
def test_a_truncated_config_is_named_and_the_settings_come_back_from_the_weights(run, keep):
    saved = RunFolder(run).load_config()
    truncate(run / "config.yaml", keep)
    with pytest.raises(RunError) as caught:
        RunFolder(run).load_config()
    message = str(caught.value)
    assert str(run / "config.yaml") in message and "damaged or incomplete" in message
    assert "delete it" in message and "model.pt" in message
    (run / "config.yaml").unlink()
    assert RunFolder(run).load_config().to_dict() == saved.to_dict()
