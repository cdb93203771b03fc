"""The full-mask suggestion: every pixel background or one of the image's tags, with a confidence.

FBE's pseudo-label (Eqs 9-13) is right where it is sure and 255 elsewhere: accepted as it is, it leaves
an annotator most of the image to paint. The suggestion labels every pixel from the best signals a run
has, in this order of trust:

1. a verified mask (the annotator's own labels) wins wherever it is not 255;
2. with FBE on: its sure pixels (pseudo-label != 255, made by the predictor from the same maps as the
   suggestion's scores) keep their label;
3. everywhere else: a dense CRF on the image colours over [background, tags] of a mix of the
   segmentation branch's probabilities (restricted to the tags) and FBE's normalised scores (Eqs 9-10,
   with the background power ``suggestion_gamma``), weighted ``suggestion_seg_weight`` :
   ``1 - suggestion_seg_weight``. The scores come from the CAMs the caller passes: the enhanced CAM, in
   the fast mode mixed with three class priors (the predictor's ``_suggestion_cams``): the class co-localisation
   map (``colocalisation.py``), the ImageNet class prior (``imagenet_prior.py``) and the folder pixel
   classifier (``pixel_probe.py``).

Why: the segmentation branch generalises over the whole folder once it is well trained, but is blurry at
object borders; FBE's scores follow this image's enhanced CAM; the CRF snaps both to colour edges. On real
photos after the CPU preset (``docs/BENCHMARKS.md``) the segmentation branch is still weak and mixing it in
lowered the mIoU (seg weight 0.3: -3 points), so the CPU preset uses weight 0. The background power:
before the class priors, 2 scored 2 points above Eq 10's 4 (with 4 a pixel turns foreground from a
normalised CAM of 0.28 on; with 2 from 0.38). With the priors and the 1.5x prediction scale, 3 scored 0.9
and 0.8 points above 2 on ``mix/`` in a prototype (seeds 0 and 1), but lost 1.7 points on the synthetic
demo (86.6 against 88.3), more than its noise, so 2 stays. The CRF adds about one point. The CRF's
bilateral kernel is set to the image's scale (``suggestion_crf_sxy`` = 1/8 of the longest side, colour
width 8) instead of psa's 80 px and 13 (tuned on 500 px VOC photos, too wide for the 320 px working size):
+1.7 and +2.8 points on ``mix/`` (seeds 0 and 1). The class priors: ``docs/BENCHMARKS.md`` ("How the
suggestion is built"). The confidence is the CRF marginal of the chosen label (1 on verified pixels, and at
least FBE's score on kept FBE pixels).
"""
from __future__ import annotations

import copy
import dataclasses

import torch
import torch.nn.functional as F
from torch import Tensor

from oste_core.config import ModelConfig
from oste_core.labels import UNSURE, tags_multi_hot

from oste_core.suggest.seeds import SeedHints, apply_hints

from .crf import DenseCRF
from .fbe import EPS, fbe_scores


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
    """Suggestion ``(H, W)`` long in {0} + ``tags`` and its confidence ``(H, W)`` float in [0, 1].

    ``seg_logits`` (K+1, H, W) and ``cams`` (K, h, w) of one image, ``image_uint8`` (3, H, W), ``tags``
    1-based class indices, ``pseudo_label`` (H, W) with 255 = unsure (None: keep no FBE pixel),
    ``verified`` (H, W) or None, ``seeds``: the annotator's strokes (``oste_core/suggest/seeds.py``): their
    pixels are kept like verified ones and spread by their affinities before the CRF.
    """
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
    if len(allowed) > 1:
        marginals = scaled_crf(crf, cfg, max(height, width)).probabilities(
            image_uint8[None], mixed[None], [len(allowed)])[0].to(mixed.device)
    else:
        marginals = torch.ones_like(mixed)
    confidence, picked = marginals.max(dim=0)
    label = allowed[picked]
    if pseudo_label is not None:
        sure = pseudo_label.to(label.device) != UNSURE
        if seeds is not None:  # FBE's sure pixels give way where a stroke says otherwise
            for seeded, affinity in seeds.affinity.items():
                sure &= ~((affinity.to(label.device) > 0.5) & (pseudo_label.to(label.device) != seeded))
        label = torch.where(sure, pseudo_label.to(label.device).long(), label)
        fbe_confidence = scores.max(dim=0).values.to(confidence.device)
        confidence = torch.where(sure, torch.maximum(confidence, fbe_confidence), confidence)
    for fixed in (None if seeds is None else seeds.labels, verified):  # strokes, then a verified mask, win
        if fixed is not None:
            fixed = fixed.to(label.device).long()
            known = fixed != UNSURE
            label = torch.where(known, fixed, label)
            confidence = torch.where(known, torch.ones_like(confidence), confidence)
    return label, confidence.clamp(0.0, 1.0)
