"""Location Expansion Module, LEM (Eqs 3-5).

Eqs 3-4 cut the image I (H x W) into non-overlapping n x n grids of tiles (the paper: n = 2 and 4,
i.e. 4 and 16 tiles of 1/2 and 1/4 the side). Every tile goes through the same backbone and CAM
classifier; the tile CAMs are stitched back in place, giving one merged CAM per grid (M_1/2, M_1/4),
and Eq 5 sums them: M_merge = M_1/2 + M_1/4.

Choices the paper leaves open (following Puzzle-CAM, which does the same split/merge):
- All B*n*n tiles of one grid go through the network in a single batched pass. Tiles of different
  grids have different sizes, so each grid is one pass (no cheap way to batch them together
  without resizing tiles, which would change what the classifier sees).
- When H or W is not a multiple of n * feature_stride, the image is zero-padded at the bottom/right
  (zero = the mean colour after normalisation, the same fill as crop padding) so every tile is equal
  and maps to a whole number of feature pixels; the stitched map is cropped back to the real image
  and, only if the backbone rounds differently, resized to the full-image CAM resolution.
- Tile labels for Eq 15 are the image's tags (Puzzle-CAM): tile logits are ordered image-major, then
  row, then column, so ``tags.repeat_interleave(n * n, dim=0)`` lines them up.
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from .cam import resize_maps

Classify = Callable[[Tensor], tuple[Tensor, Tensor]]  # images -> (logits (N, K), CAM (N, K, h, w))


def split_into_tiles(x: Tensor, n: int) -> Tensor:
    """(B, C, H, W) -> (B*n*n, C, H/n, W/n); tile b*n*n + row*n + col is row ``row``, column ``col`` of image b."""
    batch, channels, height, width = x.shape
    if n < 1 or height % n or width % n:
        raise ValueError(f"split_into_tiles: size {height}x{width} is not divisible into a {n}x{n} grid")
    tiles = x.reshape(batch, channels, n, height // n, n, width // n).permute(0, 2, 4, 1, 3, 5)
    return tiles.reshape(batch * n * n, channels, height // n, width // n)


def stitch_tiles(tiles: Tensor, n: int) -> Tensor:
    """Exact inverse of ``split_into_tiles``: (B*n*n, C, h, w) -> (B, C, n*h, n*w)."""
    count, channels, height, width = tiles.shape
    if n < 1 or count % (n * n):
        raise ValueError(f"stitch_tiles: {count} tiles cannot form whole {n}x{n} grids")
    batch = count // (n * n)
    grid = tiles.reshape(batch, n, n, channels, height, width).permute(0, 3, 1, 4, 2, 5)
    return grid.reshape(batch, channels, n * height, n * width)


def pad_to_multiple(x: Tensor, multiple: int) -> Tensor:
    """Zero-pad (B, C, H, W) at the bottom/right so that H and W are multiples of ``multiple``."""
    height, width = x.shape[-2:]
    pad_h = -height % multiple
    pad_w = -width % multiple
    if pad_h == 0 and pad_w == 0:
        return x
    return F.pad(x, (0, pad_w, 0, pad_h))


def location_expansion(
    images: Tensor,
    classify: Classify,
    grids: Sequence[int],
    cam_size: tuple[int, int],
    feature_stride: int,
) -> tuple[dict[int, Tensor], dict[int, Tensor]]:
    """Eqs 3-5 for every grid n in ``grids``.

    Returns ``tile_logits`` {n: (B*n*n, K)} for the tile classification loss (Eq 15) and
    ``merged_cams`` {n: (B, K, h, w)}: the stitched tile CAMs at the full-image CAM size ``cam_size``.
    M_merge (Eq 5) is the sum of the merged CAMs.
    """
    height, width = images.shape[-2:]
    channels_last = images.dim() == 4 and images.is_contiguous(memory_format=torch.channels_last)
    tile_logits: dict[int, Tensor] = {}
    merged_cams: dict[int, Tensor] = {}
    for n in grids:
        if n < 1:
            raise ValueError(f"LEM grid sizes must be positive integers, got {n}")
        tiles = image_tiles(images, n, feature_stride)
        if channels_last:
            tiles = tiles.contiguous(memory_format=torch.channels_last)
        tile_logits[n], tile_cams = classify(tiles)
        merged_cams[n] = merge_tile_cams(tile_cams, n, (height, width), feature_stride, cam_size)
    return tile_logits, merged_cams


def image_tiles(images: Tensor, n: int, feature_stride: int) -> Tensor:
    """Eqs 3-4: the (B*n*n, 3, H', W') tiles of an n x n grid over images padded to a multiple of n * stride."""
    return split_into_tiles(pad_to_multiple(images, n * feature_stride), n)


def merge_tile_cams(
    tile_cams: Tensor, n: int, image_size: tuple[int, int], feature_stride: int, cam_size: tuple[int, int]
) -> Tensor:
    """Stitch the tile CAMs of one n x n grid back in place, cropped to the real image, at ``cam_size``."""
    stitched = stitch_tiles(tile_cams, n)
    multiple = n * feature_stride
    padded_h, padded_w = (math.ceil(side / multiple) * multiple for side in image_size)
    keep_h = math.ceil(stitched.shape[-2] * image_size[0] / padded_h)
    keep_w = math.ceil(stitched.shape[-1] * image_size[1] / padded_w)
    return resize_maps(stitched[..., :keep_h, :keep_w], cam_size)
