"""Foreground-background Enhanced Module, FBE (paper Eqs 9-13): pseudo-labels from enhanced CAMs.

For image b with tagged classes T (class k is ``tags[:, k-1]``; label 0 is background):

* Eq 9:  ``S_k = (M_k - min M_k) / (max M_k - min M_k)`` for k in T, the min/max taken over the valid
  (non-padding) pixels of the CAM upsampled bilinearly to the image size; untagged classes score 0.
* Eq 10: ``S_0 = (1 - max_k S_k) ** gamma`` (``cfg.gamma``, 4; psa's background power).
* Eq 11: the CRF label over [background, T] with unaries ``-log`` of ``S_fbg = [S_0, S_k]`` normalised to
  sum to one over those labels, ``cfg.crf_iters`` mean-field steps. (psa passes the scores unnormalised;
  normalising shifts each pixel's unaries by one constant, which mean field ignores, up to the 1e-5 clip.)
* Eq 12: the base label ``argmax S_fbg`` where ``max S_fbg > alpha``, else 255. ``cfg.alpha`` is 0.8,
  the best value of the paper's alpha ablation (Fig 10); its implementation-details section says 0.5.
* Eq 13: the pseudo-label is the CRF label where it equals the base label, 255 elsewhere.

Choices the paper leaves open (documented here): padding pixels (``valid`` False) are 255 and take no
part in the min/max; an image without tags is background on every valid pixel (nothing to localise,
no CRF run); a flat CAM (max == min) scores 0 everywhere.

With ``cfg.use_fbe`` False the paper's baseline pseudo-labels (plain thresholding): ``S_k = M_k / max M_k``
(CAM clipped at 0), background score ``cfg.baseline_threshold``, argmax, 255 on padding only.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from oste_core.config import ModelConfig

from oste_core.labels import UNSURE

from .crf import DenseCRF, make_crf

EPS = 1e-6


def fbe_scores(cams: Tensor, tags: Tensor, cfg: ModelConfig, size: tuple[int, int],
               valid: Tensor | None = None) -> Tensor:
    """Scores ``(B, K+1, H, W)`` in [0, 1]: channel 0 the background (Eq 10), channel k class k (Eq 9).

    Untagged classes score 0. The per-pixel confidence of the pseudo-label is ``scores.max(1)``.
    With ``cfg.use_fbe`` False: the baseline's max-normalised CAM and constant background score.
    """
    if cams.dim() != 4 or tags.shape != cams.shape[:2]:
        raise ValueError(f"FBE expects cams (B, K, h, w) and tags (B, K); got {tuple(cams.shape)} and {tuple(tags.shape)}")
    batch = cams.shape[0]
    cams = F.interpolate(cams.float(), size=size, mode="bilinear", align_corners=False)
    valid = _valid_mask(valid, batch, size, cams.device)[:, None]
    tagged = (tags > 0.5).to(cams.device)[:, :, None, None]
    if cfg.use_fbe:
        low = cams.masked_fill(~valid, float("inf")).amin(dim=(2, 3), keepdim=True)
        high = cams.masked_fill(~valid, float("-inf")).amax(dim=(2, 3), keepdim=True)
        span = high - low
        fg = torch.where(span > EPS, (cams - low) / span.clamp_min(EPS), torch.zeros_like(cams))
    else:
        cams = cams.clamp_min(0.0)
        high = cams.masked_fill(~valid, 0.0).amax(dim=(2, 3), keepdim=True)
        fg = cams / high.clamp_min(EPS)
    fg = (fg.clamp(0.0, 1.0) * tagged).masked_fill(~valid, 0.0)
    if cfg.use_fbe:
        bg = (1.0 - fg.amax(dim=1, keepdim=True)).pow(cfg.gamma)
    else:
        bg = torch.full_like(fg[:, :1], cfg.baseline_threshold)
    return torch.cat([bg, fg], dim=1)


@torch.no_grad()
def make_pseudo_labels(cams: Tensor, images_uint8: Tensor, tags: Tensor, cfg: ModelConfig,
                       crf: DenseCRF | None, valid: Tensor | None = None) -> Tensor:
    """Pseudo-labels ``(B, H, W)`` long in {0..K, 255} from CAMs ``(B, K, h, w)`` (Eqs 9-13).

    ``images_uint8`` is ``(B, 3, H, W)`` uint8 RGB and sets the output size; ``tags`` ``(B, K)`` multi-hot;
    ``valid`` ``(B, H, W)`` bool marks real (non-padding) pixels. ``crf`` None builds one from
    ``cfg.crf_backend`` / ``cfg.crf_iters`` on the CAMs' device (only needed when ``cfg.use_fbe``).
    """
    if images_uint8.dim() != 4 or images_uint8.shape[1] != 3 or images_uint8.shape[0] != cams.shape[0]:
        raise ValueError(f"FBE expects images (B, 3, H, W) matching cams {tuple(cams.shape)}, "
                         f"got {tuple(images_uint8.shape)}")
    size = (images_uint8.shape[2], images_uint8.shape[3])
    device = cams.device
    valid = _valid_mask(valid, cams.shape[0], size, device)
    tagged = tags.to(device) > 0.5
    scores = fbe_scores(cams, tags, cfg, size, valid)
    allowed = torch.cat([torch.ones_like(tagged[:, :1]), tagged], dim=1)[:, :, None, None]
    confidence, label = scores.masked_fill(~allowed, -1.0).max(dim=1)
    if cfg.use_fbe:
        base = label.masked_fill(confidence <= cfg.alpha, UNSURE)
        crf_label = _crf_labels(scores, images_uint8, tagged, cfg, crf)
        label = torch.where(crf_label == base, crf_label, torch.full_like(label, UNSURE))
    return label.masked_fill(~valid, UNSURE)


def _crf_labels(scores: Tensor, images_uint8: Tensor, tagged: Tensor, cfg: ModelConfig,
                crf: DenseCRF | None) -> Tensor:
    """Eq 11: the CRF label (class index) over [background, tagged classes] of each image, batched.

    Each image's labels are packed first (background, then its tags in class order), so one CRF call
    runs the whole batch; an image without tags is all background (and skips the CRF).
    """
    allowed = torch.cat([torch.ones_like(tagged[:, :1]), tagged], dim=1)
    order = torch.argsort((~allowed).to(torch.uint8), dim=1, stable=True)  # allowed labels first
    counts = allowed.sum(dim=1)
    num_labels = int(counts.max())
    order = order[:, :num_labels]
    packed = scores.gather(1, order[:, :, None, None].expand(-1, -1, *scores.shape[2:]))
    used = torch.arange(num_labels, device=scores.device)[None, :] < counts[:, None]
    packed = packed * used[:, :, None, None]
    probs = packed / packed.sum(dim=1, keepdim=True).clamp_min(EPS)
    picked = torch.zeros(probs.shape[0], *probs.shape[2:], dtype=torch.long, device=scores.device)
    rows = (counts > 1).nonzero()[:, 0]  # images with tags; the others stay background without a CRF run
    if len(rows):
        crf = crf or make_crf(cfg.crf_backend, iters=cfg.crf_iters, device=scores.device)
        picked[rows] = crf(images_uint8[rows.to(images_uint8.device)], probs[rows], counts[rows].tolist()).to(picked.device)
    return order.gather(1, picked.flatten(1)).view_as(picked)


def _valid_mask(valid: Tensor | None, batch: int, size: tuple[int, int], device: torch.device) -> Tensor:
    if valid is None:
        return torch.ones(batch, *size, dtype=torch.bool, device=device)
    if tuple(valid.shape) != (batch, *size):
        raise ValueError(f"valid mask must be (B, H, W) = {(batch, *size)}, got {tuple(valid.shape)}")
    return valid.to(device).bool()
