"""OSTE paper modules, one per file (each docstring cites its equations)."""
from .cam import CAMHead, multiscale_flip_sum, resize_maps
from .lem import location_expansion, pad_to_multiple, split_into_tiles, stitch_tiles
from .maf import MultilevelActivationFusion
from .seg_head import SegHead

__all__ = [
    "CAMHead",
    "MultilevelActivationFusion",
    "SegHead",
    "location_expansion",
    "multiscale_flip_sum",
    "pad_to_multiple",
    "resize_maps",
    "split_into_tiles",
    "stitch_tiles",
]
