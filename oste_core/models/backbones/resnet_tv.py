"""Torchvision ResNet-50 / ResNet-101 (He et al., "Deep Residual Learning for Image Recognition", CVPR 2016),
dilated in the last stages (DeepLab-style) to output stride 8 or 16.

Stages: [conv1+bn1+relu, maxpool+layer1, layer2, layer3, layer4]. Parameter names are torchvision's, so its
ImageNet files load directly (the ``fc`` classifier is dropped). The forward is torchvision's, written out
with `conv_bn` so that frozen BN is folded into the convolutions.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch
import torchvision
from torch import Tensor
from torchvision.models.resnet import Bottleneck

from .base import NO_WEIGHTS_HINT, Backbone, PretrainedWeightsError, resolve_pretrained
from .conv_bn import conv_bn

ALLOW_DOWNLOAD_ENV = "OSTE_ALLOW_DOWNLOAD"

_WEIGHT_ENUMS = {
    "resnet50": torchvision.models.ResNet50_Weights.IMAGENET1K_V2,
    "resnet101": torchvision.models.ResNet101_Weights.IMAGENET1K_V2,
}


class TorchvisionResNet(Backbone):
    """A torchvision ResNet without its classifier, returning the five stage features."""

    ignored_weight_modules = ("fc",)

    def __init__(self, output_stride: int = 8) -> None:
        super().__init__(output_stride)
        dilate = [False, True, True] if output_stride == 8 else [False, False, True]
        net = getattr(torchvision.models, self.name)(weights=None, replace_stride_with_dilation=dilate)
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4
        self.stage_channels = [64, 256, 512, 1024, 2048]
        self.stage_strides = [2, 4, 8, 8, 8] if output_stride == 8 else [2, 4, 8, 16, 16]

    def forward(self, x: Tensor) -> list[Tensor]:
        stages = [self.relu(conv_bn(self.conv1, self.bn1, x))]
        x = self.maxpool(stages[0])
        for layer in (self.layer1, self.layer2, self.layer3, self.layer4):
            for block in layer:
                x = _bottleneck(block, x)
            stages.append(x)
        return stages


def _bottleneck(block: Bottleneck, x: Tensor) -> Tensor:
    """``torchvision.models.resnet.Bottleneck.forward`` with each conv + BN through `conv_bn`."""
    identity = x if block.downsample is None else conv_bn(block.downsample[0], block.downsample[1], x)
    out = block.relu(conv_bn(block.conv1, block.bn1, x))
    out = block.relu(conv_bn(block.conv2, block.bn2, out))
    return block.relu(conv_bn(block.conv3, block.bn3, out) + identity)


class ResNet50(TorchvisionResNet):
    name = "resnet50"


class ResNet101(TorchvisionResNet):
    name = "resnet101"


def imagenet_cache_path(name: str) -> Path:
    """Where torch hub keeps (or would keep) the torchvision ImageNet file of ``name``."""
    filename = os.path.basename(_WEIGHT_ENUMS[name].url)
    return Path(torch.hub.get_dir()) / "checkpoints" / filename


def imagenet_weights_file(name: str) -> Path:
    """The torch-hub-cached ImageNet weights file of ``name``, downloaded first unless OSTE_ALLOW_DOWNLOAD=0."""
    url = _WEIGHT_ENUMS[name].url
    cached = imagenet_cache_path(name)
    if cached.is_file():
        return cached
    fix = (
        f"Download {url} and save it as {cached} (or anywhere, then pass model.pretrained=PATH), {NO_WEIGHTS_HINT}"
    )
    if os.environ.get(ALLOW_DOWNLOAD_ENV, "1") == "0":
        raise PretrainedWeightsError(
            f"{name}: ImageNet weights not found at {cached} and downloading is disabled "
            f"({ALLOW_DOWNLOAD_ENV}=0). {fix}"
        )
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        # torchvision file names end in the first 8 hex digits of the file's SHA-256
        hash_prefix = cached.stem.rsplit("-", 1)[-1]
        torch.hub.download_url_to_file(url, str(cached), hash_prefix=hash_prefix, progress=False)
    except Exception as error:  # network failures surface as URLError, OSError, RuntimeError (hash) ...
        raise PretrainedWeightsError(
            f"{name}: ImageNet weights not found at {cached} and the download failed ({error}). {fix}"
        ) from error
    return cached


def build_torchvision_resnet(
    name: str, output_stride: int = 8, pretrained: str | Path | None = "auto"
) -> TorchvisionResNet:
    """ResNet-50/101 with torchvision's ImageNet weights ("auto"), a local state-dict file, or random init."""
    weights = resolve_pretrained(pretrained)
    model = {"resnet50": ResNet50, "resnet101": ResNet101}[name](output_stride)
    if weights == "auto":
        weights = imagenet_weights_file(name)
    if weights is not None:
        model.load_weights(weights)
    return model
