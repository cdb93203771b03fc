"""Clicks and strokes as seeds of one image's suggestion. Not part of OSTE.

A stroke says "these pixels are label L". The image's suggestion keeps them, and spreads them to the
pixels that look like them: for each stroked label, the mean of its seed cells' descriptors (unit length,
``colocalisation.descriptors``) is compared with every cell's; a cell closer to that prototype than to the
prototype of the label it has now (from the current pseudo-label, seeds left out; an unsure cell: the nearest
label's prototype) moves towards L, the more
the nearer it is to a seed of L (a Gaussian of ``reach`` times the image's longest side). ``SeedHints``
carries the stroked pixels and these affinities; ``recipe.make_suggestion`` raises L's score by them, lowers the
others', and the dense CRF then snaps the result to the image's edges. Costs one matrix product per image.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from oste_core.labels import UNSURE

SHARPNESS = 20.0  # cosine-similarity margin -> affinity: sigmoid(SHARPNESS * margin)


@dataclass
class SeedHints:
    """The stroked pixels (H, W) long, 255 elsewhere, and ``{label: (H, W) affinity in [0, 1]}``."""

    labels: Tensor
    affinity: dict[int, Tensor]


def labels_on_grid(mask: np.ndarray, grid: tuple[int, int], min_share: float = 0.5) -> np.ndarray:
    """A label mask (H, W) with 255 = no label, on a (h, w) grid: each cell takes the label covering most of it
    if that label covers at least ``min_share`` of the cell (so thin strokes still mark a cell with a small
    ``min_share``), else 255."""
    height, width = grid
    best_share = np.zeros(grid, np.float32)
    best = np.full(grid, UNSURE, np.uint8)
    for label in np.unique(mask):
        if label == UNSURE:
            continue
        share = cv2.resize((mask == label).astype(np.float32), (width, height), interpolation=cv2.INTER_AREA)
        better = share > best_share
        best_share[better], best[better] = share[better], label
    best[best_share < min_share] = UNSURE
    return best


def _prototypes(unit: Tensor, cell_labels: Tensor, labels: list[int]) -> dict[int, Tensor]:
    """Mean unit descriptor (C,) of the cells of each label that has cells."""
    found = {}
    for label in labels:
        cells = cell_labels == label
        if cells.any():
            found[label] = F.normalize(unit[:, cells].mean(dim=1), dim=0)
    return found


def seed_hints(image_descriptors: Tensor, seeds: np.ndarray, current: np.ndarray, size: tuple[int, int],
               reach: float = 0.35) -> SeedHints | None:
    """``SeedHints`` at ``size`` (H, W) from the stroked pixels ``seeds`` and the current suggestion ``current``
    (both label masks of any size); None without a seed."""
    known = seeds != UNSURE
    if not known.any():
        return None
    grid = tuple(image_descriptors.shape[1:])
    seed_cells = torch.from_numpy(labels_on_grid(seeds, grid, min_share=1e-6)).long()
    current_cells = torch.from_numpy(labels_on_grid(current, grid)).long()
    current_cells[seed_cells != UNSURE] = UNSURE
    unit = F.normalize(image_descriptors.float(), dim=0).cpu()
    seeded = [int(v) for v in torch.unique(seed_cells) if v != UNSURE]
    seed_prototypes = _prototypes(unit, seed_cells, seeded)
    current_prototypes = _prototypes(unit, current_cells, [int(v) for v in torch.unique(current_cells) if v != UNSURE])
    flat = unit.flatten(1)  # (C, h*w)
    similarity_now = torch.full((flat.shape[1],), -1.0)
    current_flat = current_cells.flatten()
    for label, prototype in current_prototypes.items():
        cells = current_flat == label
        similarity_now[cells] = prototype @ flat[:, cells]
    unlabelled = current_flat == UNSURE  # FBE's unsure cells: the nearest label now, not none
    if current_prototypes and unlabelled.any():
        prototypes = torch.stack(list(current_prototypes.values()))
        similarity_now[unlabelled] = (prototypes @ flat[:, unlabelled]).amax(dim=0)
    cell_count = float(max(grid))
    affinity = {}
    for label, prototype in seed_prototypes.items():
        margin = prototype @ flat - similarity_now
        distance = cv2.distanceTransform((seed_cells != label).numpy().astype(np.uint8), cv2.DIST_L2, 3)
        near = torch.from_numpy(np.exp(-0.5 * (distance / (reach * cell_count)) ** 2)).flatten()
        cell_affinity = (torch.sigmoid(SHARPNESS * margin) * near).view(grid)
        cell_affinity[seed_cells == label] = 1.0
        affinity[label] = F.interpolate(cell_affinity[None, None], size=size, mode="bilinear",
                                        align_corners=False)[0, 0]
    labels = cv2.resize(seeds.astype(np.uint8), (size[1], size[0]), interpolation=cv2.INTER_NEAREST)
    return SeedHints(torch.from_numpy(labels).long(), affinity)


def apply_hints(scores: Tensor, allowed: Tensor, hints: SeedHints) -> Tensor:
    """``scores`` (len(allowed), H, W) over the labels ``allowed`` with each seeded label raised to its affinity and
    the other labels lowered by it; seeds of labels outside ``allowed`` are ignored."""
    scores = scores.clone()
    positions = {int(label): index for index, label in enumerate(allowed.tolist())}
    for label, affinity in hints.affinity.items():
        if label not in positions:
            continue
        affinity = affinity.to(scores.device)
        index = positions[label]
        keep = scores[index].clone()
        scores *= (1.0 - affinity)[None]
        scores[index] = torch.maximum(keep, affinity)
    return scores
