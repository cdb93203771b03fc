"""Synthetic demo data: a native-layout labelled folder that a small CNN can learn in minutes.

Each image shows 1-4 objects of 1-3 of five classes on a textured background. Every class has
its own shape, colour family and texture (circle: red, speckled; square: blue, checkered;
triangle: green, striped; star: yellow, dotted; ring: purple, cross-hatched, with a hole),
while backgrounds are desaturated gradients, blotches or wide stripes. Later objects occlude
earlier ones (the mask follows); an object is only placed where every earlier one keeps at
least 45 % of its area, so the tags (read from the final mask) always name visible objects.

The folder holds ``demo_NNNN.png`` images, ``tags.csv``, ``classes.txt``, ``masks/`` (VOC
palette PNGs) and a ``priors.yaml`` that turns the ImageNet prior off (drawn shapes are not photos;
WordNet would read "circle" as a disk, ImageNet's "puck"). The same seed gives byte-identical files; the folder is built beside ``out``
and renamed into place, so it appears complete or not at all.
"""
from __future__ import annotations

import colorsys
import csv
import io
import math
import os
import shutil
import uuid
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from oste_core.data.folder import CLASSES_FILE, MASKS_DIR, TAGS_FILE
from oste_core.export.palette import encode_palette_png

DEMO_CLASSES = ("circle", "square", "triangle", "star", "ring")
_HUES = (0.0, 220.0, 120.0, 50.0, 290.0)  # colour family (degrees) of each class
_MIN_VISIBLE = 0.45  # share of an object's area that later objects must leave visible


def _rgb(rng: np.random.Generator, hue: float, saturation: tuple[float, float], value: tuple[float, float]) -> np.ndarray:
    h = ((hue + rng.uniform(-12, 12)) % 360) / 360
    return np.array(colorsys.hsv_to_rgb(h, rng.uniform(*saturation), rng.uniform(*value)), dtype=np.float32) * 255


def _mix(a: np.ndarray, b: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """Per-pixel blend of two colours, ``weight`` (H, W) in [0, 1] -> (H, W, 3) float32."""
    weight = weight.astype(np.float32)[..., None]
    return a[None, None] + (b - a)[None, None] * weight


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    first = _rgb(rng, rng.uniform(0, 360), (0.0, 0.25), (0.3, 0.9))
    second = _rgb(rng, rng.uniform(0, 360), (0.0, 0.25), (0.3, 0.9))
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32)
    kind = rng.integers(3)
    if kind == 0:  # linear gradient in a random direction
        angle = rng.uniform(0, 2 * math.pi)
        ramp = (xs * math.cos(angle) + ys * math.sin(angle)) / size
        weight = (ramp - ramp.min()) / max(float(np.ptp(ramp)), 1e-6)
    elif kind == 1:  # smooth blotches
        coarse = rng.uniform(0, 1, (4, 4)).astype(np.float32)
        weight = np.clip(cv2.resize(coarse, (size, size), interpolation=cv2.INTER_CUBIC), 0, 1)
    else:  # wide, soft stripes
        angle = rng.uniform(0, math.pi)
        period = rng.uniform(0.1, 0.25) * size
        weight = 0.5 + 0.5 * np.sin(2 * math.pi * (xs * math.cos(angle) + ys * math.sin(angle)) / period)
    return _mix(first, second, weight)


def _texture(rng: np.random.Generator, class_index: int, ys: np.ndarray, xs: np.ndarray, size: int) -> np.ndarray:
    """(N, 3) colours of a class (1-based) at pixels (ys, xs): its colour family and pattern."""
    base = _rgb(rng, _HUES[class_index - 1], (0.65, 1.0), (0.6, 1.0))
    dark = base * rng.uniform(0.45, 0.65)
    period = rng.uniform(0.05, 0.08) * size + 3
    angle = rng.uniform(0, math.pi)
    u = xs * math.cos(angle) + ys * math.sin(angle)
    v = -xs * math.sin(angle) + ys * math.cos(angle)
    if class_index == 1:  # speckled
        weight = rng.uniform(0, 1, len(ys)) < 0.2
    elif class_index == 2:  # checkered
        weight = (np.floor(u / period) + np.floor(v / period)) % 2 == 1
    elif class_index == 3:  # striped
        weight = np.sin(2 * math.pi * u / period) > 0
    elif class_index == 4:  # dotted (bright dots on a darker base)
        cell_u, cell_v = (u % period) - period / 2, (v % period) - period / 2
        weight = cell_u**2 + cell_v**2 >= (period * 0.3) ** 2
    else:  # cross-hatched
        weight = (np.sin(2 * math.pi * u / period) > 0.5) | (np.sin(2 * math.pi * v / period) > 0.5)
    return np.where(weight[:, None], dark[None], base[None])


def _polygon(centre: tuple[float, float], radii: list[float], rotation: float) -> np.ndarray:
    angles = rotation + np.arange(len(radii)) * 2 * math.pi / len(radii)
    points = np.stack([centre[0] + np.asarray(radii) * np.cos(angles), centre[1] + np.asarray(radii) * np.sin(angles)], 1)
    return np.rint(points).astype(np.int32)


def _shape(rng: np.random.Generator, class_index: int, size: int) -> np.ndarray:
    """Boolean mask of one randomly placed, sized and rotated object of a class."""
    radius = rng.uniform(0.13, 0.26) * size
    centre = (rng.uniform(0.6 * radius, size - 0.6 * radius), rng.uniform(0.6 * radius, size - 0.6 * radius))
    rotation = rng.uniform(0, 2 * math.pi)
    canvas = np.zeros((size, size), dtype=np.uint8)
    point = (round(centre[0]), round(centre[1]))
    if class_index == 1:
        cv2.circle(canvas, point, round(radius), 1, -1)
    elif class_index == 2:
        cv2.fillPoly(canvas, [_polygon(centre, [radius * 1.1] * 4, rotation)], 1)
    elif class_index == 3:
        cv2.fillPoly(canvas, [_polygon(centre, [radius * 1.25] * 3, rotation)], 1)
    elif class_index == 4:
        cv2.fillPoly(canvas, [_polygon(centre, [radius * 1.2, radius * 0.5] * 5, rotation)], 1)
    else:
        cv2.circle(canvas, point, round(radius), 1, -1)
        cv2.circle(canvas, point, round(radius * 0.55), 0, -1)
    return canvas.astype(bool)


def _plan(rng: np.random.Generator) -> list[int]:
    """Class (1-based) of each object to draw, in drawing order: 1-3 classes, 1-4 objects."""
    classes = rng.choice(len(DEMO_CLASSES), size=int(rng.choice([1, 2, 3], p=[0.4, 0.4, 0.2])), replace=False) + 1
    extra = rng.choice(classes, size=int(rng.integers(0, 4 - len(classes) + 1)))
    plan = np.concatenate([classes, extra])
    rng.shuffle(plan)
    return [int(c) for c in plan]


def render_scene(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """One demo image (size, size, 3) uint8 RGB and its mask (size, size) uint8 (0 = background)."""
    image = _background(rng, size)
    owner = np.full((size, size), -1, dtype=np.int32)
    classes: list[int] = []
    areas: list[int] = []
    min_area = max(8, size * size // 200)
    for class_index in _plan(rng):
        for _ in range(20):
            shape = _shape(rng, class_index, size)
            area = int(shape.sum())
            candidate = np.where(shape, len(classes), owner)
            visible = np.bincount(candidate.ravel() + 1, minlength=len(areas) + 2)[1:]
            if area >= min_area and all(visible[j] >= _MIN_VISIBLE * a for j, a in enumerate(areas)):
                ys, xs = np.nonzero(shape)
                image[ys, xs] = _texture(rng, class_index, ys.astype(np.float32), xs.astype(np.float32), size)
                owner = candidate
                classes.append(class_index)
                areas.append(area)
                break
    lookup = np.array([0, *classes], dtype=np.uint8)
    mask = lookup[owner + 1]
    image = cv2.GaussianBlur(image, (3, 3), 0.7) + 5 * rng.standard_normal(image.shape, dtype=np.float32)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8), mask


def _png(image: np.ndarray) -> bytes:
    ok, encoded = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    if not ok:
        raise RuntimeError("PNG encoding failed")
    return encoded.tobytes()


def write_demo_data(
    out: str | Path, n: int = 200, size: int = 128, seed: int = 0,
    on_progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Write the demo labelled folder to ``out`` (must not exist or be empty) and return it."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"{out}: already exists and is not empty; choose a new folder for the demo data")
    if n < 1 or size < 16:
        raise ValueError(f"demo data needs n >= 1 and size >= 16 (got n={n}, size={size})")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.parent / f".{out.name}.{uuid.uuid4().hex[:8]}.tmp"
    staging.mkdir()
    try:
        (staging / MASKS_DIR).mkdir()
        rows = io.StringIO()
        writer = csv.writer(rows, lineterminator="\n")
        writer.writerow(["image", "tags"])
        for i in range(n):
            image, mask = render_scene(np.random.default_rng([seed, i]), size)
            stem = f"demo_{i:04d}"
            (staging / f"{stem}.png").write_bytes(_png(image))
            (staging / MASKS_DIR / f"{stem}.png").write_bytes(encode_palette_png(mask))
            present = sorted(set(np.unique(mask).tolist()) - {0})
            writer.writerow([f"{stem}.png", ";".join(DEMO_CLASSES[c - 1] for c in present)])
            if on_progress is not None:
                on_progress(i + 1, n)
        (staging / TAGS_FILE).write_bytes(rows.getvalue().encode("utf-8"))
        (staging / CLASSES_FILE).write_bytes("".join(f"{name}\n" for name in DEMO_CLASSES).encode("utf-8"))
        (staging / "priors.yaml").write_bytes("".join(f"{name}: none\n" for name in DEMO_CLASSES).encode("utf-8"))
        if out.exists():
            out.rmdir()
        os.replace(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out
