"""The suggestion stage's fit after a fast-mode training: the fits of the recipe's steps 2-5
(``suggest/__init__.py``), each made once, in order, over the images whose backbone features are cached.

    co-localisation   the class co-localisation fit over the cached features          ``colocalisation.py``
    ImageNet prior    the frozen backbone's ImageNet classes of the folder's classes   ``imagenet_prior.py``
    pixel probe       the folder pixel classifier, taught by every image's suggestion  ``fitting.fit_pixel_probe``
    MAF refinement    MAF re-taught on the prior-mixed maps' pseudo-labels (opt-in)    ``fitting.teach_maf_refinement``

Each is skipped without the fast mode or at weight 0; an update keeps the fits of the run it continues (the
frozen features do not change). The trainer saves the result in ``model.pt`` (``state.py``).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from oste_core.config import OSTEConfig
from oste_core.data import LabelledFolder, Sample
from oste_core.engine.feature_cache import FeatureCache
from oste_core.engine.predictor import Predictor
from oste_core.models import OSTEModel
from oste_core.models.modules.colocalisation import ColocalisationFit, descriptors
from oste_core.models.modules.imagenet_prior import ImagenetPrior
from oste_core.suggest.fitting import fit_pixel_probe, teach_maf_refinement
from oste_core.suggest.state import SuggestionState

Progress = Callable[[int, int], None]


@dataclass
class SuggestionStageFit:
    """What the fit reads of a finished training, and how it reports.

    ``pass_progress(kind, what, start)`` gives the ``on_progress(done, total)`` of one pass over the images
    (``kind``: "priors", "probe" or "affinity"), ``log`` takes a message, ``cancelled()`` stops a pass."""

    model: OSTEModel
    cfg: OSTEConfig
    folder: LabelledFolder
    samples: list[Sample]  # the fast mode's images with cached features (none in full fine-tuning)
    feature_cache: FeatureCache | None
    device: torch.device
    run_dir: Path
    explicit_priors: dict[str, tuple[int, ...]]  # priors.yaml's ImageNet classes per class
    pass_progress: Callable[[str, str, float], Progress]
    log: Callable[[str], None]
    cancelled: Callable[[], bool]

    def fit(self, kept: SuggestionState | None = None) -> SuggestionState:
        """Every fit of the stage; those ``kept`` has (an update's run) are kept as they are."""
        kept = kept or SuggestionState()
        colocalisation = kept.colocalisation if kept.colocalisation is not None else self._colocalisation()
        imagenet_prior = kept.imagenet_prior if kept.imagenet_prior is not None else self._imagenet_prior()
        fitted = SuggestionState(colocalisation, imagenet_prior)
        fitted.pixel_probe = kept.pixel_probe if kept.pixel_probe is not None else self._pixel_probe(fitted)
        fitted.maf_refinement = kept.maf_refinement
        if fitted.maf_refinement is None:
            fitted.maf_refinement = self._maf_refinement(fitted)
        return fitted

    def _fast(self, weight: float) -> bool:
        return self.cfg.train.freeze_backbone and weight > 0

    def _predictor(self, fitted: SuggestionState) -> Predictor:
        """A predictor of the model being trained, with the fits so far."""
        return Predictor(self.model, self.cfg, self.folder.class_names, self.device, run_dir=self.run_dir,
                         priors=fitted.priors(self.model, self.device))

    @torch.no_grad()
    def _colocalisation(self) -> dict | None:
        """The class co-localisation fit over the cached features."""
        if not (self._fast(self.cfg.model.colocalisation_weight) and self.samples):
            return None
        start = time.perf_counter()
        fit = ColocalisationFit()
        model = self.model
        stage_count = len(model.backbone.stage_channels)
        was_training = model.training
        model.eval()
        progress = self.pass_progress("priors", "class priors: co-localisation", start)
        for done, sample in enumerate(self.samples, start=1):
            features = self.feature_cache.get(sample.image_path)
            stages = features.stage_list(stage_count, self.device)
            out = model.forward_features(stages, features.tile_batch(self.device), tuple(features.image_uint8.shape[-2:]),
                                         classify_only=True)
            fit.add(descriptors(stages), out["cam"][0], self.folder.tag_indices(sample))
            progress(done, len(self.samples))
        model.train(was_training)
        result = fit.result()
        self.log(f"class co-localisation fitted on {len(self.samples)} images in {time.perf_counter() - start:.0f} s")
        return None if result is None else result.to_state()

    def _imagenet_prior(self) -> dict | None:
        """The ImageNet class prior: the frozen backbone's ImageNet classifier and the ImageNet classes of the
        folder's classes; None when either is missing."""
        if not self._fast(self.cfg.model.imagenet_prior_weight):
            return None
        prior = ImagenetPrior.for_classes(self.folder.class_names, self.model.backbone.imagenet_classifier,
                                          self.explicit_priors)
        if prior is None:
            self.log("no ImageNet class prior: the backbone weights have no ImageNet classifier or no class is an "
                     "ImageNet concept")
            return None
        return prior.to_state()

    def _pixel_probe(self, fitted: SuggestionState) -> dict | None:
        """The folder pixel classifier, taught by every image's suggestion; its teaching sample is saved in the
        run (a correction refits the classifier from it: ``teaching.py``)."""
        if not (self._fast(self.cfg.model.pixel_probe_weight) and self.samples):
            return None
        start = time.perf_counter()
        was_training = self.model.training
        predictor = self._predictor(fitted)
        found = fit_pixel_probe(predictor, self.folder, self.samples, cancel=self.cancelled,
                                on_progress=self.pass_progress("probe", "pixel classifier: suggestion", start))
        self.model.train(was_training)
        if found is None:
            return None
        probe, teaching = found
        teaching.save(self.run_dir)
        cache = predictor.feature_cache  # every image's prediction-scale features are now cached: drop stale ones
        cache.prune({cache.key(sample.image_path) for sample in self.samples})
        self.log(f"pixel classifier fitted on {len(self.samples)} images in {time.perf_counter() - start:.0f} s")
        return probe.to_state()

    def _maf_refinement(self, fitted: SuggestionState) -> dict | None:
        """MAF re-taught on the pseudo-labels of the prior-mixed maps (``maf_refinement.py``)."""
        if not (self._fast(self.cfg.model.suggestion_maf_weight) and self.model.maf is not None and self.samples):
            return None
        start = time.perf_counter()
        was_training = self.model.training
        predictor = self._predictor(fitted)
        refinement = teach_maf_refinement(
            predictor, self.folder, self.samples, cancel=self.cancelled,
            on_progress=self.pass_progress("affinity", "MAF affinity: pseudo-labels, then steps", start))
        self.model.train(was_training)
        if refinement is None:
            return None
        self.log(f"MAF affinity re-taught on {len(self.samples)} images in {time.perf_counter() - start:.0f} s")
        return refinement.state_dict()
