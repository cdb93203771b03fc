"""OSTE network: backbones, paper modules and the OSTEModel."""
from .backbones import Backbone, available_backbones, build_backbone
from .oste import OSTEModel

__all__ = ["Backbone", "OSTEModel", "available_backbones", "build_backbone"]
