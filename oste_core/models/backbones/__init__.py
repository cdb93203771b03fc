"""Backbone registry: ``build_backbone(name, output_stride, pretrained, frozen_bn)`` -> five-stage ``Backbone``."""
from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Callable

from .base import Backbone, PretrainedWeightsError
from .efficientnet_lite import EfficientNetLite, build_efficientnet_lite
from .resnet38 import ResNet38, build_resnet38
from .resnet_tv import ResNet50, ResNet101, build_torchvision_resnet

_BUILDERS: dict[str, Callable[..., Backbone]] = {
    "efficientnet_lite0": partial(build_efficientnet_lite, 0),
    "efficientnet_lite1": partial(build_efficientnet_lite, 1),
    "efficientnet_lite2": partial(build_efficientnet_lite, 2),
    "resnet38": build_resnet38,
    "resnet50": partial(build_torchvision_resnet, "resnet50"),
    "resnet101": partial(build_torchvision_resnet, "resnet101"),
}


def available_backbones() -> list[str]:
    """Names accepted by ``build_backbone``."""
    return sorted(_BUILDERS)


def build_backbone(
    name: str, output_stride: int = 8, pretrained: str | Path | None = "auto", frozen_bn: bool = False
) -> Backbone:
    """Build backbone ``name`` at ``output_stride`` (8 or 16).

    ``pretrained``: "auto" (the bundled or cached ImageNet weights; ``PretrainedWeightsError`` when there are
    none), a local state-dict file, or "none"/None for random initialisation.
    """
    builder = _BUILDERS.get(name.strip().lower())
    if builder is None:
        raise ValueError(f"unknown backbone {name!r}; available: {', '.join(available_backbones())}")
    backbone = builder(output_stride=output_stride, pretrained=pretrained)
    backbone.set_frozen_bn(frozen_bn)
    return backbone


__all__ = [
    "Backbone",
    "EfficientNetLite",
    "PretrainedWeightsError",
    "ResNet38",
    "ResNet50",
    "ResNet101",
    "available_backbones",
    "build_backbone",
]
