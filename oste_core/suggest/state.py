"""The suggestion stage's state in ``model.pt``: the fits the recipe mixes in (``suggest/__init__.py``).

A fast-mode run saves, beside its weights, each fit it has under its own key (a fit it does not have is left
out): ``colocalisation``, ``imagenet_prior``, ``pixel_probe`` (each module's ``to_state()`` dict) and
``maf_refinement`` (the re-taught MAF's ``state_dict()``). `SuggestionState` holds those dicts as saved
(what the trainer writes and an update keeps); `SuggestionPriors`, the objects built from them (what the
predictor mixes in).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import torch

from oste_core.engine.run_folder import RunError
from oste_core.models import OSTEModel
from oste_core.models.modules.colocalisation import Colocalisation
from oste_core.models.modules.imagenet_prior import ImagenetPrior
from oste_core.models.modules.maf import MultilevelActivationFusion
from oste_core.models.modules.pixel_probe import PixelProbe

KEYS = ("colocalisation", "imagenet_prior", "pixel_probe", "maf_refinement")  # model.pt's keys, in saving order


@dataclass
class SuggestionPriors:
    """The fits the suggestion mixes into the enhanced CAM (None: the run has none, or not yet)."""

    colocalisation: Colocalisation | None = None  # the class co-localisation fit
    imagenet_prior: ImagenetPrior | None = None  # the ImageNet class prior
    pixel_probe: PixelProbe | None = None  # the folder pixel classifier
    maf_refinement: MultilevelActivationFusion | None = None  # MAF re-taught on the mixed maps' pseudo-labels


@dataclass
class SuggestionState:
    """The fits as saved in ``model.pt`` (see the module docstring); None where the run has none."""

    colocalisation: dict | None = None
    imagenet_prior: dict | None = None
    pixel_probe: dict | None = None
    maf_refinement: dict | None = None

    @classmethod
    def from_checkpoint(cls, state: dict) -> "SuggestionState":
        """The fits of a loaded ``model.pt`` (or ``checkpoint.pt``, which has none)."""
        return cls(*(state.get(key) for key in KEYS))

    def add_to(self, payload: dict) -> dict:
        """``payload`` (the dict saved as ``model.pt``) with every fit this state has."""
        for key in KEYS:
            if getattr(self, key) is not None:
                payload[key] = getattr(self, key)
        return payload

    def priors(self, model: OSTEModel, device: torch.device | str = "cpu",
               weights: Path | None = None) -> SuggestionPriors:
        """The fits as objects; the MAF refinement (a copy of ``model.maf`` with the saved weights, on
        ``device``) only when the model has MAF. ``weights`` names the file in the RunError of a refinement
        that does not fit the model."""
        maf_refinement = None
        if self.maf_refinement is not None and model.maf is not None:
            maf_refinement = copy.deepcopy(model.maf)
            try:
                maf_refinement.load_state_dict(self.maf_refinement)
            except RuntimeError as exc:
                raise RunError(f"{weights}: the MAF refinement does not match the saved config ({exc})") from exc
            maf_refinement = maf_refinement.to(device).eval()
        return SuggestionPriors(
            colocalisation=None if self.colocalisation is None else Colocalisation.from_state(self.colocalisation),
            imagenet_prior=None if self.imagenet_prior is None else ImagenetPrior.from_state(self.imagenet_prior),
            pixel_probe=None if self.pixel_probe is None else PixelProbe.from_state(self.pixel_probe),
            maf_refinement=maf_refinement)
