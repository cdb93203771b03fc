"""Energy loss (Eqs 18-21): exact against a naive double loop, gradients, padding, chunking."""
from __future__ import annotations

import math

import pytest
import torch

from oste_core.losses.energy import energy_loss


def naive_energy(probs: torch.Tensor, image: torch.Tensor, valid: torch.Tensor, sigma_rgb: float, sigma_xy: float,
                 spacing: float = 1.0) -> float:
    """sum_k sum_{i != j} G S_k(i) (1 - S_k(j)) / sum_{i != j} G over valid pixels, one image, pixel by pixel."""
    _, height, width = probs.shape
    pixels = [(y, x) for y in range(height) for x in range(width) if valid[y, x]]
    energy = total = 0.0
    for yi, xi in pixels:
        for yj, xj in pixels:
            if (yi, xi) == (yj, xj):
                continue
            d_xy = ((yi - yj) ** 2 + (xi - xj) ** 2) * spacing ** 2
            d_rgb = float(((image[:, yi, xi].double() - image[:, yj, xj].double()) ** 2).sum())
            g = math.exp(-d_xy / (2 * sigma_xy ** 2) - d_rgb / (2 * sigma_rgb ** 2))
            total += g
            energy += g * sum(float(probs[k, yi, xi]) * (1 - float(probs[k, yj, xj])) for k in range(probs.shape[0]))
    return energy / total


def random_inputs(batch=2, classes=3, height=6, width=5, seed=0, dtype=torch.float32):
    gen = torch.Generator().manual_seed(seed)
    probs = torch.softmax(torch.randn(batch, classes, height, width, generator=gen, dtype=dtype) * 2, dim=1)
    images = torch.randint(0, 256, (batch, 3, height, width), generator=gen, dtype=torch.uint8)
    return probs, images


def test_matches_naive_double_loop_on_a_tiny_image():
    probs, images = random_inputs()
    valid = torch.ones(2, 6, 5, dtype=torch.bool)
    # small sigmas so that the kernel really varies over a 6 x 5 image
    loss = energy_loss(probs, images, valid, sigma_rgb=60.0, sigma_xy=3.0, scale=1.0)
    expected = sum(naive_energy(probs[b], images[b], valid[b], 60.0, 3.0) for b in range(2)) / 2
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_grid_positions_are_in_original_pixel_units():
    probs, small = random_inputs(batch=1, height=6, width=5, seed=1)
    big = small.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)  # 2 x 2 blocks: area downscale is exact
    valid = torch.ones(1, 12, 10, dtype=torch.bool)
    loss = energy_loss(probs, big, valid, sigma_rgb=60.0, sigma_xy=6.0, scale=0.5)
    expected = naive_energy(probs[0], small[0], valid[0, ::2, ::2], 60.0, 6.0, spacing=2.0)
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_gradient_matches_finite_differences():
    probs, images = random_inputs(batch=2, classes=2, height=3, width=3, seed=2, dtype=torch.float64)
    valid = torch.ones(2, 3, 3, dtype=torch.bool)
    valid[1, :, 2] = False
    probs.requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda p: energy_loss(p, images, valid, sigma_rgb=80.0, sigma_xy=2.0, scale=1.0, chunk=5), (probs,))


def test_padding_is_excluded():
    probs, images = random_inputs(seed=3)
    valid = torch.ones(2, 6, 5, dtype=torch.bool)
    valid[:, :, 3:] = False
    loss = energy_loss(probs, images, valid, sigma_rgb=60.0, sigma_xy=3.0, scale=1.0)
    expected = sum(naive_energy(probs[b], images[b], valid[b], 60.0, 3.0) for b in range(2)) / 2
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    changed_probs, changed_images = probs.clone(), images.clone()
    changed_probs[:, :, :, 3:] = torch.softmax(torch.randn(2, 3, 6, 2), dim=1)
    changed_images[:, :, :, 3:] = 0
    assert energy_loss(changed_probs, changed_images, valid, 60.0, 3.0, 1.0).item() == pytest.approx(loss.item(), rel=1e-6)


def test_chunk_size_does_not_change_the_value():
    probs, images = random_inputs(batch=1, height=16, width=12, seed=4)
    values = [energy_loss(probs, images, None, 15.0, 100.0, scale=0.5, chunk=chunk).item() for chunk in (1, 7, 4096)]
    assert values == pytest.approx([values[0]] * 3, rel=1e-5)


def test_segmentation_along_the_colour_edge_has_lower_energy():
    images = torch.zeros(1, 3, 16, 16, dtype=torch.uint8)
    images[:, 0, :, :8] = 200  # red left half, black right half
    along = torch.zeros(1, 2, 16, 16)
    along[:, 0, :, :8] = 1
    along[:, 1, :, 8:] = 1
    across = torch.zeros(1, 2, 16, 16)
    across[:, 0, :8] = 1
    across[:, 1, 8:] = 1
    uniform = torch.zeros(1, 2, 16, 16)
    uniform[:, 0] = 1
    energy = {name: energy_loss(p, images, None, 15.0, 100.0, scale=0.5).item()
              for name, p in (("along", along), ("across", across), ("uniform", uniform))}
    assert energy["uniform"] == pytest.approx(0.0, abs=1e-7)
    assert energy["along"] < 0.01 < 0.3 < energy["across"] <= 1.0


def test_runs_under_bf16_autocast_in_float32():
    probs, images = random_inputs(batch=1, height=12, width=12, seed=5)
    plain = energy_loss(probs, images, None, 15.0, 100.0, scale=0.5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = energy_loss(probs, images, None, 15.0, 100.0, scale=0.5)
    assert mixed.dtype == torch.float32
    assert mixed.item() == pytest.approx(plain.item(), rel=1e-5)


def test_no_valid_pixels_gives_a_zero_that_still_backpropagates():
    probs, images = random_inputs(batch=1, seed=6)
    probs.requires_grad_(True)
    loss = energy_loss(probs, images, torch.zeros(1, 6, 5, dtype=torch.bool), scale=1.0)
    loss.backward()
    assert loss.item() == 0.0 and torch.equal(probs.grad, torch.zeros_like(probs))


def test_bad_shapes_are_reported():
    probs, images = random_inputs(batch=2)
    with pytest.raises(ValueError, match="batch sizes differ"):
        energy_loss(probs, images[:1], None)
    with pytest.raises(ValueError, match=r"images \(B, 3, H, W\)"):
        energy_loss(probs, images[:, :2], None)
