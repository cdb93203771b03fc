"""Multilevel Activation Fusion, MAF (Eqs 6-8).

Eq 6 is non-local attention y_i = 1/C(x) sum_j f(x_i, x_j) g(x_j). MAF builds x from several backbone
stages (default 3, 4, 5): each stage is projected by a 1x1 conv (+ GroupNorm, ReLU) to ``dim``
channels, resized to the CAM resolution and concatenated. Eq 7 scores pixel pairs by the cosine
similarity of two 1x1 convs, f(x_i, x_j) = cos(theta(x_i), phi(x_j)); ReLU (not softmax) removes the
negative scores, a power sharpens them and each row is divided by its sum, so every pixel gets a
convex combination of the others. Eq 8 propagates the LEM merged CAMs with this affinity and adds the CAM:

    enhanced = (CAM + A . g(sum_n w_n M_1/n)) / 2

Choices the paper leaves open, following SEAM's PCM (which is this same block):
- g is the identity on the K CAM channels: a learned 1x1 g would mix classes, and the enhanced CAM
  must stay one map per class for FBE; nothing would supervise g to keep classes apart.
- The per-grid weights w_n are fixed and equal (1 / number of grids): A is linear, so the weighted
  merged CAMs are propagated in one product; learnable weights had no loss that would set them well.
- The sum with the CAM is halved (an average) so the enhanced CAM stays on the CAM's scale; FBE
  min-max normalises each class anyway (Eq 9), so this changes no pseudo-label.
- Without LEM the CAM itself is propagated (SEAM: A . CAM).
- Backbone features are detached by default (``detach_features``, SEAM's PCM does so) so the affinity
  cannot distort the features the classifier relies on.
- None of Eqs 14-17 touches the enhanced CAM, so theta/phi learn from an affinity loss on the current
  pseudo-labels (``oste_core.losses.affinity``, as AFA, the paper's ref 7, learns its affinity); the
  forward returns Eq 7's similarity for it. An earlier SEAM-style L1 between the enhanced and the
  merged CAM was satisfied by a near-uniform affinity that blurred the CAM (docs/PAPER_VS_DEFAULTS.md).
- The ReLU'd similarity is raised to ``power`` (default 8, PSA's beta; the paper cites PSA for Eq 10)
  before the rows are normalised: without it a pixel's affinity spreads over most of the image and
  A . M blurs the merged CAM; power 8 lifts the pseudo-labels' mIoU and coverage on the synthetic benchmark
  (docs/PAPER_VS_DEFAULTS.md).
- phi starts as a copy of theta, so the initial affinity is a true symmetric cosine similarity whose
  diagonal is 1. Once they differ, a pixel whose similarities are all <= 0 would get an empty row;
  a tiny weight on the diagonal makes it keep its own value instead of dropping to 0.
- Similarity, normalisation and propagation run in float32 (outside autocast). Above ``max_pixels``
  CAM pixels (large images at inference) the affinity is computed on an area-downsampled grid and
  its propagation upsampled back, bounding its memory to max_pixels^2 floats per image.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .cam import resize_maps
from .seg_head import group_norm

EPS = 1e-5


class MultilevelActivationFusion(nn.Module):
    """MAF: affinity from fused multi-stage features, propagating the merged CAMs (Eq 8)."""

    def __init__(
        self,
        stage_channels: Sequence[int],
        dim: int = 64,
        detach_features: bool = True,
        max_pixels: int = 64 * 64,
        power: float = 1.0,
    ) -> None:
        super().__init__()
        self.detach_features = detach_features
        self.power = power
        self.max_pixels = max_pixels
        self.projections = nn.ModuleList(
            nn.Sequential(nn.Conv2d(channels, dim, 1, bias=False), group_norm(dim), nn.ReLU(inplace=True))
            for channels in stage_channels
        )
        self.theta = nn.Conv2d(dim * len(stage_channels), dim, 1, bias=False)
        self.phi = nn.Conv2d(dim * len(stage_channels), dim, 1, bias=False)
        with torch.no_grad():
            self.phi.weight.copy_(self.theta.weight)

    def fuse_features(self, stage_features: Sequence[Tensor], size: tuple[int, int]) -> Tensor:
        """x of Eq 8: projected stage features at ``size``, concatenated -> (B, S*dim, h, w)."""
        if len(stage_features) != len(self.projections):
            raise ValueError(f"MAF expects {len(self.projections)} stage features, got {len(stage_features)}")
        fused = []
        for features, projection in zip(stage_features, self.projections):
            if self.detach_features:
                features = features.detach()
            fused.append(projection(resize_maps(features, size)))
        return torch.cat(fused, dim=1)

    def similarity(self, fused: Tensor, pixels: Tensor | None = None) -> Tensor:
        """Eq 7: cosine similarity of theta(x_i) and phi(x_j), (B, N, N) float32 in [-1, 1]; ``pixels`` (flat
        indices into the h*w grid): only between those N pixels."""
        query, key = self.theta(fused).flatten(2), self.phi(fused).flatten(2)
        if pixels is not None:
            query, key = query[:, :, pixels], key[:, :, pixels]
        query = F.normalize(query.float(), dim=1, eps=EPS)
        key = F.normalize(key.float(), dim=1, eps=EPS)
        with torch.autocast(device_type=fused.device.type, enabled=False):
            return torch.bmm(query.transpose(1, 2), key)

    def normalise(self, similarity: Tensor) -> Tensor:
        """ReLU, power and row normalisation of a similarity: A[b, i, j] >= 0, rows sum to 1 (an empty
        row is the identity's)."""
        scores = _power(F.relu(similarity), self.power)
        if scores.requires_grad:
            scores = scores + EPS * torch.eye(similarity.shape[-1], device=similarity.device, dtype=similarity.dtype)
            return scores / scores.sum(dim=2, keepdim=True)
        scores.diagonal(dim1=-2, dim2=-1).add_(EPS)  # inference: in place, no N x N identity
        return scores.div_(scores.sum(dim=2, keepdim=True))

    def affinity(self, fused: Tensor) -> Tensor:
        """Eq 7 + ``normalise``: (B, N, N) float32, A[b, i, j] >= 0, rows sum to 1."""
        return self.normalise(self.similarity(fused))

    def affinity_grid(self, size: tuple[int, int]) -> tuple[int, int]:
        """The grid the affinity is computed on for CAMs of ``size``: the size itself, or a smaller one
        of at most ``max_pixels`` pixels."""
        height, width = size
        if height * width <= self.max_pixels:
            return height, width
        factor = math.sqrt(self.max_pixels / (height * width))
        return max(1, int(height * factor)), max(1, int(width * factor))

    def propagate(self, fused: Tensor, maps: Tensor) -> tuple[Tensor, Tensor]:
        """(A . maps, similarity) for maps (B, K, h, w) at the resolution of ``fused``.

        A . maps is float32 (B, K, h, w); the similarity is Eq 7 on ``affinity_grid((h, w))``.
        """
        size = tuple(maps.shape[-2:])
        grid = self.affinity_grid(size)
        if grid != size:
            fused, small_maps = F.adaptive_avg_pool2d(fused, grid), F.adaptive_avg_pool2d(maps, grid)
        else:
            small_maps = maps
        similarity = self.similarity(fused)
        with torch.autocast(device_type=maps.device.type, enabled=False):
            propagated = torch.bmm(small_maps.flatten(2).float(), self.normalise(similarity).transpose(1, 2))
        propagated = propagated.reshape(maps.shape[0], maps.shape[1], *grid)
        return (resize_maps(propagated, size) if grid != size else propagated), similarity

    def forward(
        self, stage_features: Sequence[Tensor], cam: Tensor, merged_cams: Sequence[Tensor] = ()
    ) -> tuple[Tensor, Tensor]:
        """(enhanced CAM, similarity): the enhanced CAM (B, K, h, w), float32, is
        (CAM + A . mean(merged CAMs or [CAM])) / 2; the similarity (B, N, N) is Eq 7 on
        ``affinity_grid((h, w))``, for the affinity loss."""
        fused = self.fuse_features(stage_features, tuple(cam.shape[-2:]))
        source = torch.stack(list(merged_cams)).mean(dim=0) if merged_cams else cam
        propagated, similarity = self.propagate(fused, source)
        return (cam.float() + propagated) / 2, similarity


def _power(scores: Tensor, power: float) -> Tensor:
    """``scores ** power``; a power of two by repeated squaring (an N x N matrix: a general ``pow`` costs a third of
    MAF's time at the prediction scale, the squarings a tenth)."""
    exponent = int(power)
    if exponent != power or exponent < 1 or exponent & (exponent - 1):
        return scores**power
    while exponent > 1:
        scores = scores * scores
        exponent //= 2
    return scores
