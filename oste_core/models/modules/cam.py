"""Class activation maps: the CAM head (Eq 1) and multi-scale + flip CAM fusion (Eq 2).

Eq 1: M_k(I) = Trans( ReLU( sum_c w_{k,c} F_final(I)_c ) ). A bias-free 1x1 convolution applies the
classifier weights w to every pixel of the last backbone features; global average pooling of that
class map gives the image logits (by linearity the same as classifying the pooled features, as in
psa / SEAM / Puzzle-CAM), and its ReLU is the CAM. ``Trans`` (resize to the input) is
``resize_maps``.

Eq 2: M_MS(I) = sum_i Trans(M(I^{S_i})) over the scales S_i = {0.5, 1, 1.5, 2}; like psa / SEAM /
Puzzle-CAM at inference we also add the horizontally flipped image of every scale (its maps are
flipped back before the sum). ``multiscale_flip_sum`` does this for any map-producing function.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class CAMHead(nn.Module):
    """Bias-free 1x1 classifier over the last features: image logits (GAP) and the ReLU CAM (Eq 1)."""

    def __init__(self, in_channels: int, num_classes: int) -> None:
        super().__init__()
        self.classifier = nn.Conv2d(in_channels, num_classes, kernel_size=1, bias=False)
        nn.init.xavier_uniform_(self.classifier.weight)

    def forward(self, features: Tensor) -> tuple[Tensor, Tensor]:
        """features (B, C, h, w) -> logits (B, K), CAM (B, K, h, w) >= 0 at feature resolution."""
        # the 1x1 convolution as a matrix product: the same values, and 4-5x faster than conv2d on a CPU
        # (measured: 1280 -> 20 channels on a 40x30 map, forward + backward, 125 ms vs 27 ms)
        class_map = torch.einsum("kc,bchw->bkhw", self.classifier.weight[:, :, 0, 0], features)
        return class_map.float().mean(dim=(2, 3)), F.relu(class_map)


def resize_maps(maps: Tensor, size: tuple[int, int]) -> Tensor:
    """Bilinear resize of (B, C, h, w) maps to ``size`` (the ``Trans`` of Eq 1); a no-op at that size."""
    if tuple(maps.shape[-2:]) == tuple(size):
        return maps
    return F.interpolate(maps, size=size, mode="bilinear", align_corners=False)


def multiscale_flip_sum(
    predict: Callable[[Tensor], dict[str, Tensor]],
    image: Tensor,
    scales: Sequence[float] = (0.5, 1.0, 1.5, 2.0),
    flip: bool = True,
) -> dict[str, Tensor]:
    """Eq 2: sum of ``predict``'s maps over rescaled (and flipped) copies of one image.

    ``image`` is (1, 3, H, W). For each scale the image (and its mirror, batched with it) goes through
    ``predict``, which returns named maps (N, C, h, w); each is resized to (H, W) in float32, the
    mirrored one flipped back, and all are summed: the result maps are (C, H, W). Divide by
    ``len(scales) * (2 if flip else 1)`` for an average.
    """
    if image.dim() != 4 or image.shape[0] != 1:
        raise ValueError(f"multiscale_flip_sum expects one image (1, 3, H, W), got shape {tuple(image.shape)}")
    if not scales:
        raise ValueError("multiscale_flip_sum needs at least one scale")
    height, width = image.shape[-2:]
    totals: dict[str, Tensor] = {}
    for scale in scales:
        if scale <= 0:
            raise ValueError(f"CAM scales must be positive, got {scale}")
        size = (max(1, round(height * scale)), max(1, round(width * scale)))
        scaled = resize_maps(image, size)
        batch = torch.cat([scaled, scaled.flip(-1)]) if flip else scaled
        for key, maps in predict(batch).items():
            maps = resize_maps(maps.float(), (height, width))
            fused = maps[0] + maps[1].flip(-1) if flip else maps[0]
            totals[key] = totals[key] + fused if key in totals else fused
    return totals

