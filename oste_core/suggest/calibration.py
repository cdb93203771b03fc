"""A per-label bias of the suggestion's CRF input, learnt from the annotator's pixels.

The recipe's maps are made by fits that know nothing of this folder's annotator: one class is often
systematically too small or too large against the background (a car that stops at its wheels). The verified
masks and strokes say by how much. ``fit_label_bias`` fits one log-space bias per label (background and each
class) so that step 8's unary probabilities, renormalised over the image's labels, agree best with those pixels
(a multinomial regression with the unaries as fixed offsets, L2-regularised towards 0), and
``recipe._crf_input`` applies it to every image. K + 1 numbers, so a few corrected photos already fit them;
they are refitted with the pixel classifier after each correction.
"""
from __future__ import annotations

import torch
from torch import Tensor

from oste_core.models.modules.fbe import EPS

PIXELS_PER_PHOTO = 4000  # a random subset of each photo's labelled pixels: every photo counts alike
L2 = 0.05  # pull towards no bias, against the labelled pixels' mean cross-entropy
MAX_BIAS = 3.0  # at most e^3 = 20x on a label's probability
MIN_PHOTOS = 2  # fewer corrected photos: no bias
MAX_PHOTOS = 40  # the photos corrected last: a refit after a save stays within seconds


def bias_sample(allowed: Tensor, mixed: Tensor, labels: Tensor, seed: int = 0) -> tuple[Tensor, Tensor, Tensor] | None:
    """One photo's part of the fit: ``allowed`` (L,) labels, ``mixed`` (L, H, W) unary probabilities,
    ``labels`` (H, W) long with 255 = unlabelled. Returns (log-unaries (N, L), allowed (L,), targets (N,) as
    positions in ``allowed``), None when no labelled pixel is an allowed label."""
    position = torch.full((256,), -1, dtype=torch.long)
    position[allowed.cpu()] = torch.arange(len(allowed))
    targets = position[labels.cpu().clamp(0, 255).flatten()]
    keep = torch.nonzero(targets >= 0).flatten()
    if len(keep) == 0:
        return None
    if len(keep) > PIXELS_PER_PHOTO:
        keep = keep[torch.randperm(len(keep), generator=torch.Generator().manual_seed(seed))[:PIXELS_PER_PHOTO]]
    logs = mixed.float().cpu().flatten(1)[:, keep].T.clamp_min(EPS).log()
    return logs, allowed.cpu(), targets[keep]


def fit_label_bias(samples: list[tuple[Tensor, Tensor, Tensor]], num_labels: int) -> Tensor | None:
    """The bias (K + 1,) from ``bias_sample``'s parts (None with fewer than ``MIN_PHOTOS``)."""
    if len(samples) < MIN_PHOTOS:
        return None
    bias = torch.zeros(num_labels, requires_grad=True)
    optimiser = torch.optim.LBFGS([bias], max_iter=100, line_search_fn="strong_wolfe")
    count = sum(len(targets) for _, _, targets in samples)

    def loss_fn() -> Tensor:
        optimiser.zero_grad()
        loss = L2 * bias.square().sum()
        for logs, allowed, targets in samples:
            scores = logs + bias[allowed]
            loss = loss + torch.nn.functional.cross_entropy(scores, targets, reduction="sum") / count
        loss.backward()
        return loss

    optimiser.step(loss_fn)
    bias = bias.detach()
    return (bias - bias.mean()).clamp(-MAX_BIAS, MAX_BIAS)


def apply_label_bias(mixed: Tensor, allowed: Tensor, bias: Tensor | None) -> Tensor:
    """``mixed`` (L, H, W) with ``bias`` of its ``allowed`` labels, renormalised; as it is without a bias."""
    if bias is None:
        return mixed
    weighted = mixed * bias.to(mixed.device)[allowed.to(mixed.device)].exp()[:, None, None]
    return weighted / weighted.sum(dim=0, keepdim=True).clamp_min(EPS)
