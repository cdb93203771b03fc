"""Inference from a trained run: CAMs, FBE pseudo-labels, segmentation, the full-mask suggestion.

The segmentation prediction and the suggestion are restricted to the image's tags plus background when
tags are known (an annotation assistant knows them; the paper's test protocol does not, pass
``tags=None`` to predict over all classes). A run trained in the fast mode (frozen backbone) predicts
from the run's feature cache at the fast mode's working size times ``fast_predict_scale``; other runs
use multi-scale + flip inference (Eq 2). The suggestion follows the recipe of ``oste_core/suggest``
(``suggest/__init__.py``), with the fits a fast-mode run saved in ``model.pt`` (``suggest/state.py``); what a
refit of the pixel classifier does not change is kept per image (`ImageState`). Results are cached (LRU)
under a key of everything that changes them: the image, its tags, its verified mask and the run's weights;
a run's predictor also keeps each image's state and last suggestion in the run (``suggest/store.py``).
"""
from __future__ import annotations

import dataclasses
import hashlib
import logging
import math
import tempfile
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from oste_core.config import OSTEConfig
from oste_core.data import ImageLoadError, LabelledFolder, Sample, load_image, load_mask
from oste_core.engine.feature_cache import FeatureCache, backbone_identity, cache_cap_mb
from oste_core.engine.run_folder import DATA, RunError, RunFolder
from oste_core.labels import UNSURE, clean_labels
from oste_core.models import OSTEModel
from oste_core.models.modules.cam import resize_maps
from oste_core.models.modules.colocalisation import descriptors
from oste_core.models.modules.crf import background_pool, make_crf
from oste_core.models.modules.pixel_probe import PixelProbe
from oste_core.suggest.corrections import load_corrections
from oste_core.suggest.recipe import mix_probe_logits, refines_maps, restrict_to_tags, suggest, suggestion_maps
from oste_core.suggest.state import SuggestionPriors, SuggestionState
from oste_core.suggest.store import ImageState, SuggestionStore, result_key, store_identity, weights_digest
from oste_core.suggest.teaching import FolderTeaching, TeachingSet
from oste_core.utils.device import pick_device

log = logging.getLogger(__name__)
STATE_CACHE_SIZE = 256  # images whose ImageState stays in memory (about 1.3 MB each at the CPU default)


@dataclass
class Prediction:
    cam: np.ndarray  # (K, H, W) float32 in [0, 1], multi-scale original CAM (Eq 2)
    merged_cam: np.ndarray  # (K, H, W) LEM merged CAM (zeros when LEM is off)
    enhanced_cam: np.ndarray  # (K, H, W) MAF enhanced CAM
    pseudo_label: np.ndarray  # (H, W) uint8, 0 background, 1..K classes, 255 unsure: FBE on the suggestion's maps
    seg: np.ndarray  # (H, W) uint8 segmentation prediction
    confidence: np.ndarray  # (H, W) float32, softmax max of the segmentation branch
    suggestion: np.ndarray  # (H, W) uint8, every pixel background or a tag (a verified mask wins): suggest/
    suggestion_confidence: np.ndarray  # (H, W) float32 in [0, 1]
    tags: list[int]  # 1-based class indices used

    @property
    def uncertainty(self) -> float:
        """Share of unsure (255) pixels in the pseudo-label: the review-order key."""
        return float((self.pseudo_label == UNSURE).mean())


def _normalise_per_class(cams: torch.Tensor) -> torch.Tensor:
    peak = cams.flatten(1).amax(dim=1).clamp_min(1e-6)
    return (cams / peak[:, None, None]).clamp(0, 1)


def _at(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(C, h, w) maps at ``size``, bilinear (as they are when already that size)."""
    return maps.float() if tuple(maps.shape[-2:]) == size else resize_maps(maps.float()[None], size)[0]


def _fit(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A label mask at ``size`` (H, W), nearest neighbour."""
    if mask.shape == size:
        return mask
    return cv2.resize(mask, (size[1], size[0]), interpolation=cv2.INTER_NEAREST)


class Predictor:
    """Loads a run and predicts masks for single images or a whole folder."""

    def __init__(self, model: OSTEModel, cfg: OSTEConfig, class_names: list[str], device: torch.device,
                 cache_size: int = 16, run_dir: str | Path | None = None, weights_stamp: str = "",
                 priors: SuggestionPriors | None = None) -> None:
        self.model = model.eval()
        self.cfg = cfg
        self.class_names = class_names
        self.device = device
        self.crf = make_crf(cfg.model.crf_backend, iters=cfg.model.crf_iters, device=device)
        if self.crf.backend == "pydensecrf":
            background_pool()  # the helper process of the suggestion's CRF starts while the run loads
        self.scales = tuple(cfg.model.cam_scales)
        self.max_side = cfg.train.max_side
        self.problems: list[str] = []
        self.weights_stamp = weights_stamp  # part of every cache key: an updated run predicts anew
        self.feature_cache = None
        self.tile_cache = None  # the working-size features whose LEM tiles the prediction scale merges
        self.priors = priors or SuggestionPriors()  # fast mode: the fits saved with the weights (suggest/state.py)
        if cfg.train.freeze_backbone:
            cache_dir = Path(run_dir) if run_dir is not None else Path(tempfile.mkdtemp(prefix="oste-features-"))
            images = RunFolder(run_dir).load_json(DATA).get("images") if run_dir is not None else None
            cap = math.inf if images is None else cache_cap_mb(cfg.train.feature_cache_mb, images)  # the run's cap
            def cache(scale: float, grids: tuple[int, ...] | None, memory_mb: float) -> FeatureCache:
                return FeatureCache(cache_dir, model, backbone_identity(cfg.model), cfg.train.fast_max_side,
                                    cfg.train.max_side, device, keep_in_memory_mb=memory_mb, scale=scale, cap_mb=cap,
                                    grids=grids)

            scale = cfg.train.fast_predict_scale
            self.feature_cache = cache(scale, None if scale == 1.0 else (), 256.0)
            if model.lem_grids and scale != 1.0:
                self.tile_cache = cache(1.0, None, 0.0)
        self._trained_probe = self.priors.pixel_probe  # the probe as trained, before any annotator pixel
        self.teaching: FolderTeaching | None = None  # set by from_run when the run kept its teaching sample
        self._probe_generation = 0  # part of every cache key: a refit predicts anew
        self._cache: OrderedDict[tuple, Prediction] = OrderedDict()
        self._cache_size = cache_size
        self._states: OrderedDict[str, ImageState] = OrderedDict()  # what a refit does not change, per image
        self._compact_probe: PixelProbe | None = None  # a refit's classifier, in the teaching sample's space
        self._probe_identity = "trained"  # what the classifier was refitted from (part of a stored result's key)
        self.store: SuggestionStore | None = None  # set by from_run in the fast mode: every image's state and result
        self._weights_digest = ""
        self._lock = threading.RLock()

    @classmethod
    def from_run(cls, run_dir: str | Path, device: str = "auto") -> "Predictor":
        run_dir = Path(run_dir)
        weights = RunFolder(run_dir).weights_file()
        state = RunFolder.load_weights(weights)
        try:
            ignored: list[str] = []
            cfg = OSTEConfig.from_dict(state["config"], ignored=ignored)
            class_names = list(state["class_names"])
        except Exception as exc:  # noqa: BLE001 - one clear message for any unreadable file
            raise RunError(f"{weights}: cannot read this model file ({exc})") from exc
        if ignored:
            log.warning("%s: ignoring settings this version does not know: %s", weights, ", ".join(ignored))
        torch_device = pick_device(device)
        # the weights come from the run, not from ImageNet; the feature cache keeps the identity it was trained with
        model_cfg = dataclasses.replace(cfg.model, pretrained="none")
        model = OSTEModel(model_cfg, num_classes=len(class_names))
        try:
            model.load_state_dict(state["model"])
        except RuntimeError as exc:
            raise RunError(f"{weights}: weights do not match the saved config ({exc})") from exc
        stat = weights.stat()
        priors = SuggestionState.from_checkpoint(state).priors(model, torch_device, weights)
        predictor = cls(model.to(torch_device), cfg, class_names, torch_device, run_dir=run_dir,
                        weights_stamp=f"{weights}:{stat.st_size}:{stat.st_mtime_ns}", priors=priors)
        teaching = TeachingSet.load(run_dir) if priors.pixel_probe is not None else None
        if teaching is not None:
            predictor.teaching = FolderTeaching(teaching, len(class_names))
        if predictor.feature_cache is not None:
            predictor._weights_digest = weights_digest(weights)
            predictor.store = SuggestionStore(run_dir, store_identity(predictor._weights_digest, cfg))
        return predictor

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def clear_cache(self) -> None:
        """Forget every result and image state (e.g. after a change of ``cfg``: the run's store is then read and
        written under the new settings)."""
        with self._lock:
            self._cache.clear()
            self._states.clear()
            if self.store is not None:
                self.store.identity = store_identity(self._weights_digest, self.cfg)

    @torch.no_grad()
    def predict(self, image: np.ndarray, tags: list[int] | None, key: str | None = None,
                verified: np.ndarray | None = None, image_path: str | Path | None = None,
                corrections: np.ndarray | None = None) -> Prediction:
        """Predict one (H, W, 3) uint8 RGB image; ``tags`` are 1-based class indices (None = unknown).

        ``verified``: the image's verified mask (it wins in the suggestion); ``corrections``: its sparse
        corrections (255 = none), kept and spread as seeds (``suggest/seeds.py``; their classes join the tags);
        ``image_path`` lets a fast-mode run reuse the image's cached features; ``key`` names the image in the
        result cache.
        """
        cache_key = stored_key = None
        if key is not None:
            mask_ids = tuple(None if mask is None else hashlib.sha1(mask.tobytes()).hexdigest()
                             for mask in (verified, corrections))
            cache_key = (key, None if tags is None else tuple(tags), mask_ids, self.weights_stamp,
                         self._probe_generation)
            if tags is not None and image_path is not None:
                stored_key = result_key(tags, mask_ids, self._probe_identity)
        with self._lock:
            if cache_key is not None and cache_key in self._cache:
                self._cache.move_to_end(cache_key)
                return self._cache[cache_key]
            prediction = self._predict(image, tags, verified, image_path, corrections, stored_key)
            if cache_key is not None:
                self._cache[cache_key] = prediction
                while len(self._cache) > self._cache_size:
                    self._cache.popitem(last=False)
            return prediction

    def _maps(self, image: np.ndarray, image_path: str | Path | None) -> tuple[torch.Tensor, dict]:
        """The image as (1, 3, H, W) uint8 and the model's maps (see ``OSTEModel.infer_cams``): at that size, or
        on the feature grid in the fast mode (with the descriptors, last stage and MAF stages the priors read)."""
        if self.feature_cache is None:
            pixels = torch.from_numpy(np.array(image, dtype=np.uint8, copy=True)).permute(2, 0, 1)[None].to(self.device)
            return pixels, self.model.infer_cams(self.model.backbone.normalise(pixels), scales=self.scales, flip=True)
        if image_path is None:
            features = self.feature_cache.compute(self.feature_cache.working_image(image))
            tiles = None if self.tile_cache is None else self.tile_cache.compute(self.tile_cache.working_image(image))
        else:
            features = self.feature_cache.get(image_path)
            tiles = None if self.tile_cache is None else self.tile_cache.get(image_path)
        return self._feature_maps(features, tiles)

    def _feature_maps(self, features, tiles=None) -> tuple[torch.Tensor, dict]:
        """``_maps`` from an image's cached backbone features (the fast mode), on the feature grid; the LEM tiles
        are ``tiles``' (the working size's) when given, else ``features``'."""
        pixels = features.image_uint8[None].to(self.device)
        size = tuple(pixels.shape[-2:])
        stages = features.stage_list(len(self.model.backbone.stage_channels), self.device)
        tiled = features if tiles is None else tiles
        out = self.model.forward_features(stages, tiled.tile_batch(self.device), tuple(tiled.image_uint8.shape[-2:]))
        maps = {key: out[key] for key in ("cam", "enhanced_cam", "seg_logits")}
        maps["merged_cam"] = out["merged_cam"] if "merged_cam" in out else torch.zeros_like(out["cam"])
        maps = {key: value[0].float() for key, value in maps.items()}
        maps["descriptors"] = descriptors(stages)  # the co-localisation map and the pixel probe read them
        maps["last_stage"] = stages[-1][0].float()  # the ImageNet prior reads it
        maps["maf_stages"] = self._maf_stages(stages)  # the MAF refinement reads them (a list)
        return pixels, maps

    def _maf_stages(self, stages: list[torch.Tensor]) -> list[torch.Tensor]:
        """The stage features MAF reads (none without MAF)."""
        return [stages[index - 1] for index in self.model.maf_stages] if self.model.maf is not None else []

    def _predict(self, image: np.ndarray, tags: list[int] | None, verified: np.ndarray | None,
                 image_path: str | Path | None, corrections: np.ndarray | None = None,
                 stored_key: str | None = None) -> Prediction:
        state = self._state(image, image_path)
        pixels = state.pixels
        size = tuple(pixels.shape[-2:])
        seg_logits = _at(state.maps["seg_logits"], size)
        if tags is None:  # unknown tags: take the classes the segmentation branch finds
            seg_all = seg_logits.argmax(0)
            tags = [k for k in range(1, self.num_classes + 1) if (seg_all == k).float().mean() > 0.01]
        if corrections is not None:  # a class the annotator painted is in the image
            corrections = _fit(corrections, size)
            painted = {int(v) for v in np.unique(corrections) if 0 < v <= self.num_classes}
            tags = list(tags) + sorted(painted - set(tags))
        seg_logits = restrict_to_tags(seg_logits, tags)
        probs = F.softmax(seg_logits, dim=0)
        confidence, seg = probs.max(dim=0)
        stored = self._stored_result(image_path, stored_key)
        if stored is None:
            if verified is not None:
                verified = torch.from_numpy(_fit(verified, size))
            pseudo, suggestion, suggestion_confidence = suggest(
                seg_logits, self._state_maps(state, list(tags)), pixels, list(tags), self.cfg.model, self.crf,
                verified, corrections, state.seed_descriptors)
            stored = {"pseudo_label": pseudo.to(torch.uint8).cpu().numpy(),
                      "suggestion": suggestion.to(torch.uint8).cpu().numpy(),
                      "suggestion_confidence": suggestion_confidence.cpu().numpy().astype(np.float32)}
            self._store_result(image_path, stored_key, stored)
        as_np = lambda t: _normalise_per_class(_at(t, size)).cpu().numpy().astype(np.float32)  # noqa: E731
        maps = state.maps
        return Prediction(
            cam=as_np(maps["cam"]), merged_cam=as_np(maps["merged_cam"]), enhanced_cam=as_np(maps["enhanced_cam"]),
            seg=seg.to(torch.uint8).cpu().numpy(), confidence=confidence.cpu().numpy().astype(np.float32),
            tags=list(tags), **stored,
        )

    def _stored_result(self, image_path: str | Path | None, stored_key: str | None) -> dict | None:
        """The image's suggestion from the run's store when it was made under ``stored_key``, else None."""
        if self.store is None or stored_key is None:
            return None
        return self.store.load_result(self.feature_cache.key(image_path), stored_key)

    def _store_result(self, image_path: str | Path | None, stored_key: str | None, result: dict) -> None:
        if self.store is not None and stored_key is not None and self.store.has_state(self.feature_cache.key(image_path)):
            self.store.save_result(self.feature_cache.key(image_path), stored_key, result["suggestion"],
                                   result["suggestion_confidence"], result["pseudo_label"])

    def _state(self, image: np.ndarray | None, image_path: str | Path | None) -> ImageState:
        """The image's ``ImageState`` (the fast mode: from memory, else from the run's store, else computed and
        stored)."""
        key = self.feature_cache.key(image_path) if self.feature_cache is not None and image_path is not None else None
        with self._lock:
            if key in self._states:
                self._states.move_to_end(key)
                return self._states[key]
            state = self._stored_state(key, image, image_path)
            if state is None:
                pixels, out = self._maps(image, image_path)
                state = self._make_state(pixels, out)
                if key is not None and self.store is not None and state.storable:
                    state = self.store.save_state(key, state)
            if key is not None:
                self._states[key] = state
                while len(self._states) > STATE_CACHE_SIZE:
                    self._states.popitem(last=False)
            return state

    def _stored_state(self, key: str | None, image: np.ndarray | None,
                      image_path: str | Path | None) -> ImageState | None:
        if key is None or self.store is None or not self.store.has_state(key):
            return None
        if image is None:
            image = load_image(image_path, max_side=self.max_side)
        pixels = torch.from_numpy(np.array(self.feature_cache.working_image(image), dtype=np.uint8, copy=True))
        return self.store.load_state(key, pixels.permute(2, 0, 1)[None].to(self.device), self.device)

    def _make_state(self, pixels: torch.Tensor, out: dict) -> ImageState:
        maps = {key: out[key] for key in ("cam", "merged_cam", "enhanced_cam", "seg_logits")}
        if "descriptors" not in out:  # multi-scale inference: no priors, no probe, no seeds
            return ImageState(pixels, maps, None, None, None, None, out=None)
        if refines_maps(self.priors, self.cfg.model):  # the MAF refinement reads the stages: keep everything
            return ImageState(pixels, maps, None, None, None, out["descriptors"], out=out)
        every_class = list(range(1, self.num_classes + 1))
        priors_mixed = suggestion_maps(out, every_class, self.priors, self.cfg.model, use_probe=False)
        probe_logits = None if self._trained_probe is None else self._trained_probe.logits(out["descriptors"])
        compact = None if self.teaching is None else self.teaching.teaching.project_grid(out["descriptors"])
        seeds_read = compact if compact is not None else out["descriptors"]
        return ImageState(pixels, maps, priors_mixed, probe_logits, compact, seeds_read, out=None)

    def _state_maps(self, state: ImageState, tags: list[int]) -> torch.Tensor:
        """``suggestion_maps`` from an image's state: its prior-mixed maps with the current pixel classifier."""
        if state.priors_mixed is None:
            if state.out is None:
                return state.maps["enhanced_cam"]
            return suggestion_maps(state.out, tags, self.priors, self.cfg.model)
        if self._compact_probe is not None and state.compact is not None:
            logits = self._compact_probe.logits(state.compact)
        else:
            logits = state.probe_logits
        return mix_probe_logits(state.priors_mixed, logits, tags, self.priors, self.cfg.model)

    def learn_from_user(self, folder: LabelledFolder, stems: list[str] | None = None) -> bool:
        """Refit the folder pixel classifier with the annotator's verified masks and sparse corrections of
        ``stems`` (default: every image): see ``suggest/fitting.py``. True when the classifier changed."""
        from oste_core.suggest.fitting import learn_from_user

        with self._lock:  # one thread at a time: the GUI's inference and export threads share the predictor
            return learn_from_user(self, folder, stems)

    def set_pixel_probe(self, compact: PixelProbe | None, identity: str = "trained") -> None:
        """Use a refit's classifier (in the teaching sample's compact space), or None: the trained one again;
        ``identity`` names what it was refitted from (a stored suggestion made with it is reused). Every cached
        suggestion is recomputed on its next request; the images' states stay."""
        with self._lock:
            self._compact_probe = compact
            self._probe_identity = "trained" if compact is None else identity
            self.priors.pixel_probe = self._trained_probe if compact is None else self.teaching.teaching.probe(compact)
            self._probe_generation += 1
            self._cache.clear()

    def predict_sample(self, folder: LabelledFolder, sample: Sample) -> Prediction:
        """Load one sample of a folder (downscaled to the run's max side) and predict it, its verified mask
        (if any) winning in the suggestion, else its sparse corrections as seeds; cached by its stem, tags,
        masks, the run's weights and the pixel classifier's refits."""
        image = load_image(sample.image_path, max_side=self.max_side)
        verified = self._verified_mask(sample)
        corrections = None if verified is not None else load_corrections(folder.root, sample.stem,
                                                                         num_classes=self.num_classes)
        return self.predict(image, folder.tag_indices(sample), key=sample.stem, verified=verified,
                            image_path=sample.image_path, corrections=corrections)

    def _verified_at(self, sample: Sample, size: tuple[int, int]) -> torch.Tensor | None:
        """The sample's verified mask at ``size`` (H, W) as a tensor, or None."""
        verified = self._verified_mask(sample)
        return None if verified is None else torch.from_numpy(_fit(verified, size))

    def _verified_mask(self, sample: Sample) -> np.ndarray | None:
        if sample.verified_mask is None or not sample.verified_mask.exists():
            return None
        verified = load_mask(sample.verified_mask)
        clean_labels(verified, self.num_classes)
        return verified

    def predict_folder(
        self,
        folder: LabelledFolder,
        on_progress: Callable[[int, int], None] | None = None,
        cancel: Callable[[], bool] | None = None,
    ) -> Iterator[tuple[Sample, Prediction]]:
        """Predict every sample; unreadable images are skipped and recorded in ``problems``."""
        total = len(folder.samples)
        for done, sample in enumerate(folder.samples, start=1):
            if cancel is not None and cancel():
                return
            try:
                prediction = self.predict_sample(folder, sample)
            except ImageLoadError as exc:
                self.problems.append(str(exc))
            else:
                yield sample, prediction
            if on_progress is not None:
                on_progress(done, total)
