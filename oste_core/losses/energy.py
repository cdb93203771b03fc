"""Gaussian-kernel energy loss (paper Eqs 18-21): a dense-CRF regulariser on the segmentation output.

Eq 21 (the Potts form of Eqs 18-19, as in Tang et al., "On regularized losses for weakly-supervised
CNN segmentation", ECCV 2018, and RRM) for one image with segmentation probabilities S:

    E = (1 / W) * sum_k sum_{i != j} G(i, j) * S_k(i) * (1 - S_k(j))
    G(i, j) = exp(-|p_i - p_j|^2 / (2 sigma_xy^2) - |I_i - I_j|^2 / (2 sigma_rgb^2))      (Eq 20)

over the valid (non-padding) pixels of a grid: the image area-downscaled by ``scale``, with positions
p in original-image pixels so ``sigma_xy`` keeps its meaning (paper: sigma_xy 100, sigma_rgb 15).
Normalisation (Eq 20's 1/W): W = sum_{i != j} G(i, j), so E is the kernel-weighted probability that
two pixels disagree, in [0, 1] whatever the grid size; the loss is the mean of E over the images that
have at least two valid grid pixels. The diagonal i == j is excluded (a pixel is not its own neighbour).

Exact dense computation over the grid in pure PyTorch, the whole batch at once (batched matmuls, no
per-image loop, no host sync): rows of G are built ``chunk`` at a time and never stored, so memory is
O(B * chunk * N) in the forward and O(B * N * C) kept for the backward, which uses the closed form
dE/dS_k(m) = (G_m - 2 (G S_k)(m)) / W (G symmetric; G_m the row sum over valid neighbours).
Padding cells are masked out of both sums, so a padded image gives the value of its valid part alone.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from oste_core.models.modules.crf import gaussian_factors, gaussian_kernel


def energy_loss(seg_probs: Tensor, images_uint8: Tensor, valid: Tensor | None, sigma_rgb: float = 15.0,
                sigma_xy: float = 100.0, scale: float = 0.25, chunk: int = 4096) -> Tensor:
    """Mean normalised energy (Eq 21) of softmax probabilities ``(B, C, h, w)`` given ``(B, 3, H, W)`` uint8 images.

    ``valid`` ``(B, H, W)`` bool (None: every pixel) excludes padding; a grid cell is valid when at least
    half of the pixels it covers are.
    """
    if seg_probs.dim() != 4 or images_uint8.dim() != 4 or images_uint8.shape[1] != 3:
        raise ValueError(f"energy loss expects probabilities (B, C, h, w) and images (B, 3, H, W); got "
                         f"{tuple(seg_probs.shape)} and {tuple(images_uint8.shape)}")
    if seg_probs.shape[0] != images_uint8.shape[0]:
        raise ValueError(f"energy loss: batch sizes differ ({seg_probs.shape[0]} vs {images_uint8.shape[0]})")
    if not 0.0 < scale <= 1.0 or chunk < 1:
        raise ValueError(f"energy loss needs 0 < scale <= 1 and chunk >= 1, got scale={scale}, chunk={chunk}")
    batch, _, height, width = images_uint8.shape
    grid = (max(1, round(height * scale)), max(1, round(width * scale)))
    dtype = torch.float64 if seg_probs.dtype == torch.float64 else torch.float32
    device = seg_probs.device
    with torch.autocast(device_type=device.type, enabled=False):
        probs = seg_probs.to(dtype)
        if tuple(probs.shape[2:]) != grid:
            probs = F.interpolate(probs, size=grid, mode="bilinear", align_corners=False)
        colours = F.interpolate(images_uint8.to(device, dtype), size=grid, mode="area")
        if valid is None:
            cells_valid = torch.ones(batch, *grid, dtype=torch.bool, device=device)
        else:
            cells_valid = F.interpolate(valid.to(device, dtype)[:, None], size=grid, mode="area")[:, 0] >= 0.5
        ys = (torch.arange(grid[0], device=device, dtype=dtype) + 0.5) * (height / grid[0]) - 0.5
        xs = (torch.arange(grid[1], device=device, dtype=dtype) + 0.5) * (width / grid[1]) - 0.5
        yy, xx = torch.meshgrid(ys, xs, indexing="ij")
        positions = (torch.stack([yy, xx]) / sigma_xy).expand(batch, 2, *grid)
        features = torch.cat([positions, colours / sigma_rgb], dim=1).flatten(2).transpose(1, 2).contiguous()
        keep = cells_valid.flatten(1).to(dtype)
        energies = _PottsEnergy.apply(probs.flatten(2).transpose(1, 2), features, keep, chunk)
        counted = keep.sum(dim=1) >= 2  # an image needs two valid cells to have any pair
        return (energies * counted).sum() / counted.sum().clamp_min(1)


class _PottsEnergy(torch.autograd.Function):
    """Per image b: E_b = sum_k sum_{i != j} v_i v_j G_ij S_ik (1 - S_jk) / W_b for S (B, N, C), features
    (B, N, d) scaled by sigma and validity v (B, N); W_b = sum_{i != j} v_i v_j G_ij. Returns E (B,)."""

    @staticmethod
    def forward(ctx, probs: Tensor, features: Tensor, keep: Tensor, chunk: int) -> Tensor:
        batch, cells, classes = probs.shape
        # one matmul per chunk gives G (v S) and G v together
        sources = torch.cat([probs * keep[..., None], keep[..., None]], dim=2)
        filtered = torch.empty_like(sources)
        left, right = gaussian_factors(features)  # built once; each chunk is a block of kernel rows
        for start in range(0, cells, chunk):
            rows = slice(start, start + chunk)
            kernel = gaussian_kernel(left[:, rows], right)
            own = torch.arange(kernel.shape[1], device=kernel.device)
            kernel[:, own, own + start] = 0.0  # no i == j term
            filtered[:, rows] = torch.bmm(kernel, sources)
        neighbours, row_sums = filtered[..., :classes], filtered[..., classes] * keep
        total = row_sums.sum(dim=1).clamp_min(torch.finfo(probs.dtype).tiny)
        ctx.save_for_backward(neighbours, row_sums, keep, total)
        return (probs * (row_sums[..., None] - neighbours * keep[..., None])).sum(dim=(1, 2)) / total

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None, None, None]:
        neighbours, row_sums, keep, total = ctx.saved_tensors
        scale = (grad / total)[:, None, None]
        return scale * (row_sums[..., None] - 2.0 * neighbours * keep[..., None]), None, None, None
