"""The PASCAL VOC colour map, colour <-> index conversion and palette PNG writing.

Colour of class ``i`` is ``VOC_PALETTE[i]``: the bits of ``i`` are spread over the three channels
(bit 0 -> red, bit 1 -> green, bit 2 -> blue, from the most significant bit of each channel down),
so 0 is black, 1 (128, 0, 0), 2 (0, 128, 0), ... and 255 (unsure / void) is (224, 224, 192).
"""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from oste_core.utils.io import atomic_write_bytes


def _voc_colormap(count: int = 256) -> np.ndarray:
    """Build the VOC colour map by bit interleaving (the devkit's ``labelcolormap``)."""
    colours = np.zeros((count, 3), dtype=np.uint8)
    for index in range(count):
        red = green = blue = 0
        value = index
        for shift in range(7, -1, -1):
            red |= ((value >> 0) & 1) << shift
            green |= ((value >> 1) & 1) << shift
            blue |= ((value >> 2) & 1) << shift
            value >>= 3
        colours[index] = (red, green, blue)
    return colours


VOC_PALETTE: np.ndarray = _voc_colormap()
VOC_PALETTE.setflags(write=False)

_COLOUR_KEYS = (
    VOC_PALETTE[:, 0].astype(np.int64) << 16 | VOC_PALETTE[:, 1].astype(np.int64) << 8 | VOC_PALETTE[:, 2]
)


def colorize(mask: np.ndarray) -> np.ndarray:
    """(H, W) class indices -> (H, W, 3) uint8 RGB in VOC colours (255 -> (224, 224, 192))."""
    return VOC_PALETTE[np.asarray(mask, dtype=np.uint8)]


def rgb_to_index(rgb: np.ndarray, max_distance: float = 48.0) -> np.ndarray:
    """Map an (H, W, 3) VOC-coloured mask back to class indices.

    Exact palette colours map to their index. Other colours (e.g. from JPEG compression or
    resampling) map to the nearest palette colour when it is within ``max_distance`` (Euclidean,
    0..255 units), else to 255 (unsure).
    """
    rgb = np.asarray(rgb, dtype=np.uint8)[..., :3]
    keys = rgb[..., 0].astype(np.int64) << 16 | rgb[..., 1].astype(np.int64) << 8 | rgb[..., 2]
    unique_keys, inverse = np.unique(keys.reshape(-1), return_inverse=True)
    unique_rgb = np.stack([(unique_keys >> 16) & 255, (unique_keys >> 8) & 255, unique_keys & 255], axis=1)
    distances = np.linalg.norm(unique_rgb[:, None, :].astype(np.float32) - VOC_PALETTE[None].astype(np.float32), axis=2)
    nearest = distances.argmin(axis=1)
    indices = np.where(distances[np.arange(len(unique_keys)), nearest] <= max_distance, nearest, 255)
    return indices.astype(np.uint8)[inverse].reshape(keys.shape)


def is_palette_rgb(rgb: np.ndarray) -> bool:
    """True when every colour of an (H, W, 3) image is exactly a VOC palette colour."""
    rgb = np.asarray(rgb, dtype=np.uint8)[..., :3]
    keys = np.unique(rgb[..., 0].astype(np.int64) << 16 | rgb[..., 1].astype(np.int64) << 8 | rgb[..., 2])
    return bool(np.isin(keys, _COLOUR_KEYS).all())


def encode_palette_png(mask: np.ndarray) -> bytes:
    """PNG bytes of an (H, W) uint8 index mask, Pillow mode "P" with the VOC palette."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"a mask must be 2-D (H, W), got shape {mask.shape}")
    mask = np.ascontiguousarray(mask, dtype=np.uint8)
    image = Image.frombytes("P", (mask.shape[1], mask.shape[0]), mask.tobytes())
    image.putpalette(VOC_PALETTE.reshape(-1).tolist())
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def save_palette_png(path: str | Path, mask: np.ndarray) -> Path:
    """Write ``mask`` as a VOC palette PNG (index = class, 255 stays 255), atomically."""
    return atomic_write_bytes(path, encode_palette_png(mask))
