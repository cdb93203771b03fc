"""The per-image suggestion recipe (its steps: ``suggest/__init__.py``), called by the predictor.

`suggestion_maps` makes the maps FBE and the suggestion read (steps 1-5), `suggest` the pseudo-label and the
suggestion from them (steps 6-9; `make_suggestion` is steps 8-9).

Why this recipe: FBE's pseudo-label is right where it is sure but leaves most of an image unsure; the
segmentation branch generalises over the folder once it is well trained but is blurry at object borders;
FBE's scores follow this image's maps; the CRF snaps both to colour edges. The CRF's bilateral kernel is set
to the image's scale (``model.suggestion_crf_sxy`` of the longest side, colour width
``model.suggestion_crf_srgb``) instead of psa's 80 px and 13, which were tuned on 500 px VOC photos and are
too wide for the fast mode's working size. The fast mode leaves the segmentation branch out (weight 0: at
its budget the branch is still weak) and the background power is 2, not Eq 10's 4: both measured in
``docs/EXPERIMENTS.md`` ("How the suggestion is built").
"""
from __future__ import annotations

import copy
import dataclasses
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from oste_core.config import ModelConfig
from oste_core.labels import UNSURE, tags_multi_hot
from oste_core.models.modules.crf import DenseCRF
from oste_core.models.modules.fbe import EPS, fbe_scores, make_pseudo_labels
from oste_core.models.modules.maf_refinement import refine_maps
from oste_core.models.modules.pixel_probe import mix_probabilities, restricted_softmax
from oste_core.suggest.seeds import SeedHints, apply_hints, seed_hints
from oste_core.suggest.state import SuggestionPriors


def min_max_per_class(cams: Tensor) -> Tensor:
    """``(K, h, w)`` maps, each scaled to [0, 1] by its own minimum and maximum."""
    low = cams.flatten(1).amin(dim=1)[:, None, None]
    high = cams.flatten(1).amax(dim=1)[:, None, None]
    return (cams - low) / (high - low).clamp_min(1e-6)


def refines_maps(priors: SuggestionPriors, cfg: ModelConfig) -> bool:
    """True when step 5 (the re-taught MAF) applies."""
    return priors.maf_refinement is not None and cfg.suggestion_maf_weight > 0


def suggestion_maps(out: dict, tags: list[int], priors: SuggestionPriors, cfg: ModelConfig,
                    use_probe: bool = True) -> Tensor:
    """Steps 1-5: ``out``'s enhanced CAM (K, h, w) mixed with the priors the run has (reading ``out``'s
    ``descriptors`` and ``last_stage``), then refined by the re-taught MAF (``maf_stages``). ``use_probe``
    False: steps 1-3, the maps the pixel classifier is taught from (it and the refinement are fitted later)."""
    cams = out["enhanced_cam"].float()
    mixed = [(priors.colocalisation, "descriptors", cfg.colocalisation_weight),
             (priors.imagenet_prior, "last_stage", cfg.imagenet_prior_weight),
             (priors.pixel_probe if use_probe else None, "descriptors", cfg.pixel_probe_weight)]
    mixed = [(prior, out[key], weight) for prior, key, weight in mixed if prior is not None and weight > 0]
    if mixed or (priors.pixel_probe is not None and cfg.pixel_probe_weight > 0):
        cams = min_max_per_class(cams)  # maps in [0, 1]: the CAM joins the priors min-max scaled
    for prior, features, weight in mixed:
        cams = prior.mix(cams, features, tags, weight)
    if use_probe and refines_maps(priors, cfg) and out.get("maf_stages"):
        cams = refine_maps(priors.maf_refinement, out["maf_stages"], cams, cfg.suggestion_maf_weight)
    return cams


def mix_probe_logits(cams: Tensor, logits: Tensor | None, tags: list[int], priors: SuggestionPriors,
                     cfg: ModelConfig) -> Tensor:
    """Step 4 on the maps of steps 1-3 from the pixel classifier's ``logits`` (K + 1, h, w), already computed
    (the predictor keeps them per image); ``cams`` as they are without a classifier."""
    if logits is None or cfg.pixel_probe_weight <= 0 or priors.pixel_probe is None:
        return cams
    return mix_probabilities(cams, restricted_softmax(logits, tags), tags, cfg.pixel_probe_weight)


def restrict_to_tags(seg_logits: Tensor, tags: list[int]) -> Tensor:
    """Segmentation logits (K + 1, H, W) with every class but background and ``tags`` at -inf."""
    allowed = torch.zeros(seg_logits.shape[0], dtype=torch.bool, device=seg_logits.device)
    allowed[0] = True
    allowed[list(tags)] = True
    return seg_logits.masked_fill(~allowed[:, None, None], float("-inf"))


@torch.no_grad()
def suggest(seg_logits: Tensor, maps: Tensor, pixels: Tensor, tags: list[int], cfg: ModelConfig, crf: DenseCRF,
            verified: Tensor | None = None, corrections: np.ndarray | None = None,
            seed_descriptors: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """Steps 6-9 for one image: ``(pseudo_label, suggestion, confidence)``, each (H, W).

    ``seg_logits`` (K + 1, H, W) restricted to the tags, ``maps`` (K, h, w) from `suggestion_maps`, ``pixels``
    (1, 3, H, W) uint8, ``tags`` 1-based; ``verified`` (H, W) or None; ``corrections`` (H, W) with 255 = none
    become seeds where ``seed_descriptors`` (d, h, w) are known (the fast mode). Without FBE
    (``cfg.use_fbe`` False) no pseudo-label pixel is kept as sure. Without seeds the suggestion's CRF does not
    need FBE's pseudo-label, so it runs beside FBE's CRF (`DenseCRF.probabilities_later`)."""
    size = tuple(pixels.shape[-2:])
    multi_hot = tags_multi_hot(tags, maps.shape[0], pixels.device)[None]
    if corrections is None or seed_descriptors is None:
        crf_input = _crf_input(seg_logits, maps, pixels[0], tags, cfg, None)
        marginals = _start_crf(crf, cfg, pixels[0], crf_input)
        pseudo = make_pseudo_labels(maps[None], pixels, multi_hot, cfg, crf)[0]
        suggestion, confidence = _finish(crf_input, marginals(), pseudo if cfg.use_fbe else None, verified, None)
        return pseudo, suggestion, confidence
    pseudo = make_pseudo_labels(maps[None], pixels, multi_hot, cfg, crf)[0]
    hints = seed_hints(seed_descriptors, corrections, pseudo.cpu().numpy().astype(np.uint8), size)
    kept_pseudo = pseudo if cfg.use_fbe else None  # without FBE every pixel is "sure"
    suggestion, confidence = make_suggestion(seg_logits, maps, pixels[0], tags, kept_pseudo, cfg, crf, verified,
                                             hints)
    return pseudo, suggestion, confidence


def scaled_crf(crf: DenseCRF, cfg: ModelConfig, longest_side: int) -> DenseCRF:
    """``crf`` with the suggestion's bilateral kernel: ``suggestion_crf_sxy`` of the longest side, colour
    width ``suggestion_crf_srgb`` (the same backend, iterations and process pool)."""
    scaled = copy.copy(crf)
    scaled.params = dataclasses.replace(crf.params, bilateral_sxy=cfg.suggestion_crf_sxy * longest_side,
                                        bilateral_srgb=cfg.suggestion_crf_srgb)
    return scaled


@torch.no_grad()
def make_suggestion(seg_logits: Tensor, cams: Tensor, image_uint8: Tensor, tags: list[int], pseudo_label: Tensor | None,
                    cfg: ModelConfig, crf: DenseCRF, verified: Tensor | None = None,
                    seeds: SeedHints | None = None) -> tuple[Tensor, Tensor]:
    """Steps 8-9: the suggestion ``(H, W)`` long in {0} + ``tags`` and its confidence ``(H, W)`` float in [0, 1].

    ``seg_logits`` (K+1, H, W) and ``cams`` (K, h, w) of one image, ``image_uint8`` (3, H, W), ``tags``
    1-based class indices, ``pseudo_label`` (H, W) with 255 = unsure (None: keep no FBE pixel),
    ``verified`` (H, W) or None, ``seeds``: the annotator's strokes (``seeds.py``): their pixels are kept like
    verified ones and spread by their affinities before the CRF. The confidence is the CRF marginal of the
    chosen label (1 on verified and stroked pixels, at least FBE's score on kept FBE pixels).
    """
    return make_suggestion_later(seg_logits, cams, image_uint8, tags, pseudo_label, cfg, crf, verified, seeds)()


def make_suggestion_later(seg_logits: Tensor, cams: Tensor, image_uint8: Tensor, tags: list[int],
                          pseudo_label: Tensor | None, cfg: ModelConfig, crf: DenseCRF, verified: Tensor | None = None,
                          seeds: SeedHints | None = None) -> Callable[[], tuple[Tensor, Tensor]]:
    """`make_suggestion` with its CRF started (on a free core: `DenseCRF.probabilities_later`); calling the result
    gives the suggestion and its confidence, so that a pass over a folder computes the next photo meanwhile."""
    crf_input = _crf_input(seg_logits, cams, image_uint8, tags, cfg, seeds)
    marginals = _start_crf(crf, cfg, image_uint8, crf_input)
    return lambda: _finish(crf_input, marginals(), pseudo_label, verified, seeds)


@dataclasses.dataclass
class _CRFInput:
    """What step 8's CRF reads, and what step 9 needs from before it."""

    allowed: Tensor  # (L,) the labels: background, then the tags
    scores: Tensor  # (L, H, W) FBE's scores of those labels, seeds applied
    mixed: Tensor  # (L, H, W) the CRF's unary probabilities


def _crf_input(seg_logits: Tensor, cams: Tensor, image_uint8: Tensor, tags: list[int], cfg: ModelConfig,
               seeds: SeedHints | None) -> _CRFInput:
    height, width = image_uint8.shape[-2:]
    num_classes = cams.shape[0]
    allowed = torch.tensor([0, *sorted(set(tags))], device=seg_logits.device)
    seg_probs = F.softmax(seg_logits.float()[allowed], dim=0)
    multi_hot = tags_multi_hot(tags, num_classes, cams.device)[None]
    suggestion_cfg = dataclasses.replace(cfg, gamma=cfg.suggestion_gamma)
    scores = fbe_scores(cams[None].float(), multi_hot, suggestion_cfg, (height, width))[0][allowed.to(cams.device)]
    if seeds is not None:
        scores = apply_hints(scores, allowed.to(scores.device), seeds)
    fbe_probs = scores / scores.sum(dim=0, keepdim=True).clamp_min(EPS)
    weight = cfg.suggestion_seg_weight
    mixed = weight * seg_probs + (1.0 - weight) * fbe_probs.to(seg_probs.device)
    if seeds is not None:  # the stroked pixels enter the CRF as near-certain labels
        stroked = seeds.labels.to(mixed.device)
        for index, label in enumerate(allowed.tolist()):
            mixed[:, stroked == label] = 0.02 / len(allowed)
            mixed[index, stroked == label] = 0.98
    return _CRFInput(allowed, scores, mixed)


def _start_crf(crf: DenseCRF, cfg: ModelConfig, image_uint8: Tensor, crf_input: _CRFInput) -> Callable[[], Tensor]:
    """Step 8's CRF, started (see `DenseCRF.probabilities_later`): calling the result gives its marginals."""
    mixed = crf_input.mixed
    if len(crf_input.allowed) <= 1:
        return lambda: torch.ones_like(mixed)
    height, width = image_uint8.shape[-2:]
    later = scaled_crf(crf, cfg, max(height, width)).probabilities_later(image_uint8[None], mixed[None],
                                                                          [len(crf_input.allowed)])
    return lambda: later()[0].to(mixed.device)


def _finish(crf_input: _CRFInput, marginals: Tensor, pseudo_label: Tensor | None, verified: Tensor | None,
            seeds: SeedHints | None) -> tuple[Tensor, Tensor]:
    """Step 9: the CRF's labels, FBE's sure pixels kept, then the strokes and a verified mask win."""
    confidence, picked = marginals.max(dim=0)
    label = crf_input.allowed[picked]
    if pseudo_label is not None:
        sure = pseudo_label.to(label.device) != UNSURE
        if seeds is not None:  # FBE's sure pixels give way where a stroke says otherwise
            for seeded, affinity in seeds.affinity.items():
                sure &= ~((affinity.to(label.device) > 0.5) & (pseudo_label.to(label.device) != seeded))
        label = torch.where(sure, pseudo_label.to(label.device).long(), label)
        fbe_confidence = crf_input.scores.max(dim=0).values.to(confidence.device)
        confidence = torch.where(sure, torch.maximum(confidence, fbe_confidence), confidence)
    for fixed in (None if seeds is None else seeds.labels, verified):  # strokes, then a verified mask, win
        if fixed is not None:
            fixed = fixed.to(label.device).long()
            known = fixed != UNSURE
            label = torch.where(known, fixed, label)
            confidence = torch.where(known, torch.ones_like(confidence), confidence)
    return label, confidence.clamp(0.0, 1.0)
