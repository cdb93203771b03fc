"""Wide ResNet-38 (Wu, Shen, van den Hengel, "Wider or Deeper: Revisiting the ResNet Model for Visual
Recognition", Pattern Recognition 2019), in the dilated layout used for WSSS by PSA, 1-stage-wseg, RRM and OSTE.

Pre-activation residual units without pooling: conv1a (3x3, 64) -> b2 (128, /2) -> b3 (256, /2) -> b4 (512, /2)
-> b5 (1024, dilation 2) -> b6, b7 (bottleneck units, dilation 4) -> bn7 + ReLU: output stride 8 natively.
Parameter names follow PSA's converted ImageNet weights (``ilsvrc-cls_rna-a1_cls1000_ep-0001``) so that file loads.
"""
from __future__ import annotations

from pathlib import Path

import torch.nn.functional as F
from torch import Tensor, nn

from .base import NO_WEIGHTS_HINT, Backbone, PretrainedWeightsError, resolve_pretrained

WEIGHTS_NAME = "ilsvrc-cls_rna-a1_cls1000_ep-0001"
WEIGHTS_URL = (
    "https://download.visinf.tu-darmstadt.de/data/2020-cvpr-araslanov-1-stage-wseg/models/"
    "ilsvrc-cls_rna-a1_cls1000_ep-0001.pth"
)


class ResUnit(nn.Module):
    """Pre-activation unit: BN-ReLU, then 3x3 conv (stride, first_dilation), BN-ReLU, 3x3 conv (dilation)."""

    def __init__(
        self, in_ch: int, mid_ch: int, out_ch: int, stride: int = 1, first_dilation: int | None = None, dilation: int = 1
    ) -> None:
        super().__init__()
        first_dilation = dilation if first_dilation is None else first_dilation
        self.bn_branch2a = nn.BatchNorm2d(in_ch)
        self.conv_branch2a = nn.Conv2d(
            in_ch, mid_ch, 3, stride, padding=first_dilation, dilation=first_dilation, bias=False
        )
        self.bn_branch2b1 = nn.BatchNorm2d(mid_ch)
        self.conv_branch2b1 = nn.Conv2d(mid_ch, out_ch, 3, padding=dilation, dilation=dilation, bias=False)
        self.conv_branch1 = (
            nn.Conv2d(in_ch, out_ch, 1, stride, bias=False) if (in_ch != out_ch or stride != 1) else None
        )

    def forward_with_preact(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Return (unit output, BN-ReLU of the unit input); the latter is PSA's conv4/conv5 feature."""
        preact = F.relu(self.bn_branch2a(x))
        shortcut = x if self.conv_branch1 is None else self.conv_branch1(preact)
        branch = self.conv_branch2b1(F.relu(self.bn_branch2b1(self.conv_branch2a(preact))))
        return shortcut + branch, preact

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_with_preact(x)[0]


class BottleneckResUnit(nn.Module):
    """Pre-activation bottleneck unit of b6/b7: 1x1 (out/4), 3x3 dilated (out/2), 1x1 (out), with dropout."""

    def __init__(self, in_ch: int, out_ch: int, dilation: int, dropout: float) -> None:
        super().__init__()
        self.bn_branch2a = nn.BatchNorm2d(in_ch)
        self.conv_branch2a = nn.Conv2d(in_ch, out_ch // 4, 1, bias=False)
        self.bn_branch2b1 = nn.BatchNorm2d(out_ch // 4)
        self.dropout_2b1 = nn.Dropout2d(dropout)
        self.conv_branch2b1 = nn.Conv2d(
            out_ch // 4, out_ch // 2, 3, padding=dilation, dilation=dilation, bias=False
        )
        self.bn_branch2b2 = nn.BatchNorm2d(out_ch // 2)
        self.dropout_2b2 = nn.Dropout2d(dropout)
        self.conv_branch2b2 = nn.Conv2d(out_ch // 2, out_ch, 1, bias=False)
        self.conv_branch1 = nn.Conv2d(in_ch, out_ch, 1, bias=False)

    def forward_with_preact(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Return (unit output, BN-ReLU of the unit input)."""
        preact = F.relu(self.bn_branch2a(x))
        branch = self.conv_branch2a(preact)
        branch = self.conv_branch2b1(self.dropout_2b1(F.relu(self.bn_branch2b1(branch))))
        branch = self.conv_branch2b2(self.dropout_2b2(F.relu(self.bn_branch2b2(branch))))
        return self.conv_branch1(preact) + branch, preact

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_with_preact(x)[0]


class ResNet38(Backbone):
    """Wide ResNet-38; stages are the BN-ReLU'd outputs of b2, b3, b4, b5 (PSA's conv4, conv5) and bn7 (conv6).

    Output stride 8 is the native layout; output stride 16 gives b5 stride 2 and halves the later dilations.
    """

    name = "resnet38"
    ignored_weight_modules = ("fc", "fc8", "linear1000")

    def __init__(self, output_stride: int = 8) -> None:
        super().__init__(output_stride)
        b5_stride, b5_dilation, top_dilation = (1, 2, 4) if output_stride == 8 else (2, 1, 2)
        self.conv1a = nn.Conv2d(3, 64, 3, padding=1, bias=False)

        self.b2 = ResUnit(64, 128, 128, stride=2)
        self.b2_1 = ResUnit(128, 128, 128)
        self.b2_2 = ResUnit(128, 128, 128)

        self.b3 = ResUnit(128, 256, 256, stride=2)
        self.b3_1 = ResUnit(256, 256, 256)
        self.b3_2 = ResUnit(256, 256, 256)

        self.b4 = ResUnit(256, 512, 512, stride=2)
        self.b4_1 = ResUnit(512, 512, 512)
        self.b4_2 = ResUnit(512, 512, 512)
        self.b4_3 = ResUnit(512, 512, 512)
        self.b4_4 = ResUnit(512, 512, 512)
        self.b4_5 = ResUnit(512, 512, 512)

        self.b5 = ResUnit(512, 512, 1024, stride=b5_stride, first_dilation=1, dilation=b5_dilation)
        self.b5_1 = ResUnit(1024, 512, 1024, dilation=b5_dilation)
        self.b5_2 = ResUnit(1024, 512, 1024, dilation=b5_dilation)

        self.b6 = BottleneckResUnit(1024, 2048, dilation=top_dilation, dropout=0.3)
        self.b7 = BottleneckResUnit(2048, 4096, dilation=top_dilation, dropout=0.5)
        self.bn7 = nn.BatchNorm2d(4096)

        self.stage_channels = [128, 256, 512, 1024, 4096]
        self.stage_strides = [2, 4, 8, 8, 8] if output_stride == 8 else [2, 4, 8, 16, 16]

    def forward(self, x: Tensor) -> list[Tensor]:
        x = self.b2_2(self.b2_1(self.b2(self.conv1a(x))))
        x, stage1 = self.b3.forward_with_preact(x)
        x = self.b3_2(self.b3_1(x))
        x, stage2 = self.b4.forward_with_preact(x)
        for unit in (self.b4_1, self.b4_2, self.b4_3, self.b4_4, self.b4_5):
            x = unit(x)
        x, stage3 = self.b5.forward_with_preact(x)
        x = self.b5_2(self.b5_1(x))
        x, stage4 = self.b6.forward_with_preact(x)
        stage5 = F.relu(self.bn7(self.b7(x)))
        return [stage1, stage2, stage3, stage4, stage5]


def build_resnet38(output_stride: int = 8, pretrained: str | Path | None = "auto") -> ResNet38:
    """ResNet-38; ImageNet weights only from a local file (they cannot be fetched automatically)."""
    weights = resolve_pretrained(pretrained)
    if weights == "auto":
        raise PretrainedWeightsError(
            f"resnet38 has no bundled ImageNet weights: download the converted {WEIGHTS_NAME} weights "
            f"(published by psa / 1-stage-wseg, e.g. {WEIGHTS_URL}) and pass them as model.pretrained=PATH, "
            f"{NO_WEIGHTS_HINT}"
        )
    model = ResNet38(output_stride)
    if weights is not None:
        model.load_weights(weights)
    return model
