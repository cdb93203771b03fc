"""A run's weights on disk: ``checkpoint.pt`` (resume a stopped run), ``model.pt`` (the predictor's, with the suggestion
stage's fits: ``suggest/state.py``), how an update reloads a run, and what makes a run reproducible (the
package versions it records, the seeds)."""
from __future__ import annotations

import platform
import random
from typing import Callable

import numpy as np
import torch

from oste_core import __version__
from oste_core.config import OSTEConfig
from oste_core.data import LabelledFolder
from oste_core.engine.events import TrainingError
from oste_core.engine.run_folder import CHECKPOINT, CLASSES, CONFIG, FINAL_MODEL, RunError, RunFolder
from oste_core.models import OSTEModel
from oste_core.suggest.state import SuggestionState


def package_versions() -> dict[str, str]:
    """Versions written into each run folder (reproducibility)."""
    import cv2
    import torchvision

    versions = {
        "oste_studio": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "numpy": np.__version__,
        "opencv": cv2.__version__,
        "platform": platform.platform(),
    }
    try:
        from importlib.metadata import version

        versions["pydensecrf2"] = version("pydensecrf2")
    except Exception:  # noqa: BLE001 - optional backend
        versions["pydensecrf2"] = "not installed"
    return versions


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's generators."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def save_checkpoint(run_folder: RunFolder, model: OSTEModel, optimizer: torch.optim.Optimizer, iteration: int,
                    cfg: OSTEConfig, class_names: list[str]) -> None:
    """``checkpoint.pt``: the weights, the optimiser's state and the iteration, to resume from."""
    run_folder.save_weights(CHECKPOINT, {
        "model": model.state_dict(), "optimizer": optimizer.state_dict(), "iteration": iteration,
        "config": cfg.to_dict(), "class_names": class_names,
    })


def load_checkpoint(run_folder: RunFolder, model: OSTEModel, optimizer: torch.optim.Optimizer,
                    device: torch.device, log: Callable[[str], None]) -> int:
    """Resume ``model`` and ``optimizer`` from ``checkpoint.pt``; its iteration (0 when there is none yet). A
    finished run keeps no checkpoint (`drop_checkpoint`): it resumes from ``model.pt`` with a new optimiser state."""
    path = run_folder.file(CHECKPOINT)
    if not path.exists() and run_folder.is_finished():
        iteration, _ = load_weights(run_folder, model, device, action="resume")
        log(f"resumed the finished run from {FINAL_MODEL} at iteration {iteration} (the optimiser starts anew)")
        return iteration
    if not path.exists():  # stopped (killed, disk full) before its first checkpoint; cached features are kept
        log(f"{path}: no checkpoint yet; the run starts again from iteration 0")
        return 0
    try:
        state = run_folder.load_weights(path, device)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
    except RunError as exc:  # names the damage and what to do
        raise TrainingError(str(exc)) from exc
    except Exception as exc:  # noqa: BLE001 - any unreadable checkpoint is one clear error
        raise TrainingError(f"{path}: cannot resume from this checkpoint ({exc})") from exc
    log(f"resumed from iteration {state['iteration']}")
    return int(state["iteration"])


def save_model(run_folder: RunFolder, model: OSTEModel, cfg: OSTEConfig, class_names: list[str], iteration: int,
               suggestion: SuggestionState) -> None:
    """``model.pt``: the weights, config and classes the predictor loads, and the suggestion stage's fits."""
    payload = {"model": model.state_dict(), "config": cfg.to_dict(), "class_names": class_names,
               "iteration": iteration}
    run_folder.save_weights(FINAL_MODEL, suggestion.add_to(payload))


def drop_checkpoint(run_folder: RunFolder) -> None:
    """Delete ``checkpoint.pt`` once ``model.pt`` holds the finished run: its weights are there, and its optimiser
    state (as large again as the heads) only serves a resume, which starts from ``model.pt`` instead."""
    if run_folder.is_finished():
        run_folder.file(CHECKPOINT).unlink(missing_ok=True)


def load_run_settings(run_folder: RunFolder, cfg: OSTEConfig, folder: LabelledFolder) -> OSTEConfig:
    """The run's own settings, for an update (only the device is taken from ``cfg``); the run's classes must
    be the folder's."""
    if not run_folder.has_config():
        raise TrainingError(f"{run_folder.file(CONFIG)}: not found; an update continues a trained run "
                            "(train one first)")
    saved = run_folder.load_config()
    saved.train.device = cfg.train.device
    saved_classes = run_folder.load_classes() or []
    if saved_classes != folder.class_names:
        raise TrainingError(f"{run_folder.file(CLASSES)}: the run knows classes {saved_classes}, but {folder.root} now has "
                            f"{folder.class_names}; train a new run to use the new classes")
    return saved


def load_weights(run_folder: RunFolder, model: OSTEModel, device: torch.device,
                 action: str = "update") -> tuple[int, SuggestionState]:
    """The run's latest weights (``model.pt``, else ``checkpoint.pt``) into ``model``, for an update: their
    iteration and the suggestion stage's fits (the features are frozen: an update keeps them)."""
    try:
        path = run_folder.weights_file()
        state = run_folder.load_weights(path, device)
        model.load_state_dict(state["model"])
        suggestion = SuggestionState.from_checkpoint(state)
    except (RunError, RuntimeError, KeyError) as exc:
        raise TrainingError(f"cannot {action} from this run: {exc}") from exc
    return int(state.get("iteration", 0)), suggestion
