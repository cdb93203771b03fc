"""Segmentation branch: a light DeepLab-v3-style ASPP head on the last backbone features, K+1 outputs.

The paper's segmentation branch is trained on the FBE pseudo-labels (Eq 17) and the energy loss
(Eqs 18-21) and is the only branch used at test time. Here: four parallel branches (1x1 conv, two
dilated 3x3 convs and image pooling), concatenated, fused by a 1x1 conv, then a 1x1 classifier.
Dilation rates are small because the features are at output stride 8 (a 321 crop gives 41x41):
(6, 12) at OS 8, halved at OS 16. GroupNorm instead of BatchNorm because the paper trains with
batch 2 and the image-pooling branch has a single pixel per image.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with up to 16 groups (the largest power of two dividing ``channels``)."""
    groups = next(g for g in (16, 8, 4, 2, 1) if channels % g == 0)
    return nn.GroupNorm(groups, channels)


def _conv_norm_relu(in_channels: int, out_channels: int, kernel: int = 1, dilation: int = 1) -> nn.Sequential:
    padding = dilation * (kernel - 1) // 2
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel, padding=padding, dilation=dilation, bias=False),
        group_norm(out_channels),
        nn.ReLU(inplace=True),
    )


class SegHead(nn.Module):
    """ASPP-lite: (B, C, h, w) features -> (B, num_outputs, h, w) segmentation logits."""

    def __init__(self, in_channels: int, num_outputs: int, dim: int = 128, output_stride: int = 8) -> None:
        super().__init__()
        rates = (6, 12) if output_stride <= 8 else (3, 6)
        self.branches = nn.ModuleList(
            [_conv_norm_relu(in_channels, dim)] + [_conv_norm_relu(in_channels, dim, 3, rate) for rate in rates]
        )
        self.image_pool = _conv_norm_relu(in_channels, dim)
        self.fuse = _conv_norm_relu(dim * (len(rates) + 2), dim)
        self.dropout = nn.Dropout2d(0.1)
        self.classifier = nn.Conv2d(dim, num_outputs, kernel_size=1)

    def forward(self, features: Tensor) -> Tensor:
        size = features.shape[-2:]
        pooled = self.image_pool(F.adaptive_avg_pool2d(features, 1)).expand(-1, -1, *size)
        branches = [branch(features) for branch in self.branches] + [pooled]
        return self.classifier(self.dropout(self.fuse(torch.cat(branches, dim=1))))
