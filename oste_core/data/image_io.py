"""Robust image and mask loading (Pillow; works with non-ASCII paths).

`load_image` always returns (H, W, 3) uint8 RGB with the EXIF orientation applied:
grayscale is replicated to 3 channels, images with transparency (RGBA, LA, palette with
transparency) are composited on white, 16-bit images are scaled to 8 bit by the bit depth their
values use (a maximum of 4095 is read as 12-bit data, of 1023 as 10-bit, so the sensor's full range
maps onto 0..255 instead of loading dark; full 16-bit data is divided by 257), CMYK and other modes
are converted to RGB, and images larger than ``max_side`` on their longest side are downscaled
(JPEGs are decoded at a reduced scale first, so very large photos load quickly). Anything that
cannot be decoded raises `ImageLoadError` naming the file and the problem.
"""
from __future__ import annotations

import math
import warnings
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"})

_EXIF_ORIENTATION = 0x0112
_TRANSPOSING_ORIENTATIONS = (5, 6, 7, 8)  # orientations that swap width and height


class ImageLoadError(Exception):
    """One image (or mask) could not be read; ``str(error) == f"{path}: {reason}"``."""

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"{path}: {reason}")


def is_image_file(path: str | Path) -> bool:
    """True when the file name has one of the supported image extensions."""
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def _open(path: Path) -> Image.Image:
    """Open lazily with Pillow, turning every failure into `ImageLoadError`."""
    if not path.is_file():
        raise ImageLoadError(path, "file not found")
    if path.stat().st_size == 0:
        raise ImageLoadError(path, "empty file (0 bytes)")
    try:
        with warnings.catch_warnings():  # large images are expected: they are downscaled on load
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return Image.open(path)
    except UnidentifiedImageError:
        raise ImageLoadError(path, "not an image, or an unsupported image format") from None
    except Image.DecompressionBombError as exc:
        raise ImageLoadError(path, f"image too large to decode safely ({exc})") from None
    except OSError as exc:
        raise ImageLoadError(path, f"cannot open ({exc})") from None


def _decode(path: Path, image: Image.Image) -> None:
    """Force the full decode so corrupt or truncated data raises here."""
    try:
        image.load()
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise ImageLoadError(path, f"corrupt or truncated image data ({exc})") from None


def _to_uint8_array(image: Image.Image) -> np.ndarray:
    """Pillow image of any mode -> (H, W, 3) uint8 RGB."""
    mode = image.mode
    if mode.startswith("I;16") or mode == "I" or mode == "F":
        values = np.asarray(image, dtype=np.float64)
        if mode == "F" and values.size and values.max() <= 1.0:
            values = values * 255.0
        elif mode != "F" and values.size and values.max() > 255:
            bits = math.ceil(math.log2(values.max() + 1))  # 10-, 12- or 16-bit data in a 16-bit file
            values = values * (255.0 / (2**bits - 1))
        gray = np.clip(np.rint(values), 0, 255).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    has_alpha = mode in ("RGBA", "LA", "La", "RGBa", "PA") or (mode == "P" and "transparency" in image.info)
    if has_alpha:
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.asarray(Image.alpha_composite(white, rgba).convert("RGB"))
    return np.asarray(image.convert("RGB"))


def load_image(path: str | Path, max_side: int | None = 1024) -> np.ndarray:
    """Read an image as (H, W, 3) uint8 RGB, EXIF-rotated, longest side at most ``max_side``."""
    path = Path(path)
    with _open(path) as image:
        if max_side and image.format == "JPEG" and max(image.size) > max_side:
            factor = max_side / max(image.size)
            image.draft(None, (math.ceil(image.size[0] * factor), math.ceil(image.size[1] * factor)))
        _decode(path, image)
        try:
            upright = ImageOps.exif_transpose(image)
        except (OSError, ValueError, SyntaxError) as exc:
            raise ImageLoadError(path, f"corrupt EXIF data ({exc})") from None
        try:
            pixels = _to_uint8_array(upright)
        except (OSError, ValueError) as exc:
            raise ImageLoadError(path, f"unsupported pixel format {upright.mode!r} ({exc})") from None
    return np.ascontiguousarray(downscale(pixels, max_side) if max_side else pixels)


def downscale(image: np.ndarray, max_side: int) -> np.ndarray:
    """``image`` (H, W[, C]) shrunk (area interpolation) so its longest side is at most ``max_side``; never enlarged."""
    longest = max(image.shape[:2])
    return image if longest <= max_side else rescale(image, max_side / longest)


def rescale(image: np.ndarray, factor: float) -> np.ndarray:
    """``image`` (H, W[, C]) resized by ``factor`` (bilinear when enlarging, area when shrinking)."""
    if factor == 1.0:
        return image
    height, width = image.shape[:2]
    size = (max(1, round(width * factor)), max(1, round(height * factor)))
    return cv2.resize(image, size, interpolation=cv2.INTER_LINEAR if factor > 1.0 else cv2.INTER_AREA)


def image_size(path: str | Path) -> tuple[int, int]:
    """(height, width) of an image after its EXIF orientation, read from the header only."""
    path = Path(path)
    with _open(path) as image:
        width, height = image.size
        try:
            orientation = image.getexif().get(_EXIF_ORIENTATION, 1)
        except (OSError, ValueError, SyntaxError):
            orientation = 1
    if orientation in _TRANSPOSING_ORIENTATIONS:
        width, height = height, width
    return height, width


def check_image(path: str | Path) -> None:
    """Decode an image completely (JPEGs at 1/8 scale, which still reads all the data); raise
    `ImageLoadError` when it is unreadable."""
    path = Path(path)
    with _open(path) as image:
        if image.format == "JPEG":
            image.draft(None, (max(1, image.size[0] // 8), max(1, image.size[1] // 8)))
        _decode(path, image)


def load_mask(path: str | Path, shape: tuple[int, int] | None = None) -> np.ndarray:
    """Read a label mask as (H, W) uint8 class indices (255 = unsure / void).

    Accepts palette PNGs (the palette index is the class), 8-bit index PNGs ("L"), 16-bit index
    PNGs with values < 256, and RGB(A) images coloured with the VOC palette (colours are mapped
    back to indices; near colours are tolerated; if the image is gray with colours outside the
    palette, the gray value is taken as the index). Resized with nearest neighbour to ``shape``
    (H, W) when given and different (images may have been downscaled on load).
    """
    from oste_core.export.palette import is_palette_rgb, rgb_to_index  # here: oste_core.export imports this module

    path = Path(path)
    with _open(path) as image:
        _decode(path, image)
        mode = image.mode
        if mode in ("P", "L", "1"):
            mask = np.asarray(image.convert("L") if mode == "1" else image).astype(np.uint8)
        elif mode.startswith("I"):
            values = np.asarray(image)
            if values.size and (values.min() < 0 or values.max() > 255):
                raise ImageLoadError(path, f"mask values must be 0..255, found {values.min()}..{values.max()}")
            mask = values.astype(np.uint8)
        else:
            rgb = np.asarray(image.convert("RGB"))
            gray = bool((rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all())
            mask = rgb[..., 0].copy() if gray and not is_palette_rgb(rgb) else rgb_to_index(rgb)
    if shape is not None and tuple(shape) != mask.shape:
        mask = cv2.resize(mask, (int(shape[1]), int(shape[0])), interpolation=cv2.INTER_NEAREST)
    return np.ascontiguousarray(mask)
