"""Fully connected CRF (Eq 11's CRF step): an exact CPU backend and a mean-field backend in PyTorch.

Model (Krähenbühl & Koltun 2011, as psa / RRM / 1-stage-wseg use it): unary ``-log p`` (probabilities
clipped at 1e-5, as ``pydensecrf.utils.unary_from_softmax``), a Gaussian kernel on position
(sxy 3, compat 3) and a bilateral kernel on position and RGB (sxy 80, srgb 13, compat 10), Potts
compatibility, mean-field inference for ``iters`` steps (psa's settings, ``CRFParams``).
Both backends follow ``densecrf``'s mean field exactly in form: ``Q = softmax(-U)``, then
``Q = softmax(-U + sum_m w_m * N_m K_m N_m Q)`` where ``K_m`` is the kernel (self-weight included)
and ``N_m = diag(1 / sqrt(K_m 1))`` is its ``NORMALIZE_SYMMETRIC`` normalisation; ``PottsCompatibility(w)``
adds ``-w * filtered Q`` to the pairwise energy, i.e. ``+w * filtered Q`` to the logit of each label.

Backends (``make_crf``):

* ``"pydensecrf"``: the reference C++ implementation (permutohedral lattice) on the CPU, one image
  at a time, or over a spawn-safe process pool with ``workers > 0``.
* ``"torch"``: the same mean field in PyTorch on any device. The Gaussian kernel is an exact
  separable Gaussian (two 1-D convolutions, truncated at 4 sigma, zero outside the image). The
  bilateral kernel is computed exactly between the occupied cells of a bilateral grid: pixels are
  binned in the scaled feature space (x/sxy, y/sxy, rgb/srgb) with cells of ``bin_xy`` x ``bin_rgb``
  sigmas; each cell holds the sum of Q of its pixels and sits at its pixels' mean feature; the
  message is the dense Gaussian between cells (M x M, built once per image) and every pixel reads
  its own cell's message. Cells are widened by 1.25x until at most ``max_bins`` are occupied, so
  memory and time per iteration are bounded by ``max_bins**2``. This is an approximation of the
  same order as the permutohedral lattice's (whose vertices are about one sigma apart).

Agreement with pydensecrf (10 iterations, blurry CAM-like unaries): scikit-image ``astronaut`` at
240x240, 3 labels: 98.98% of pixels get the same label (the unary alone agrees on 84.95%); at
321x321: 99.09%; ``coffee`` at 240x360, 2 labels: 99.60%. ``tests/test_fbe_crf.py`` asserts >= 97%.
Speed, 321x321, 3 labels, 10 iterations, one thread of this project's (shared, loaded) 2-core dev
machine: pydensecrf 0.23-0.37 s, torch 0.30-0.45 s per image (astronaut, and a smooth-gradient image
that fills all 2048 cells). With 2 threads on that loaded machine torch took 1.3-2.3 s (its many small
ops suffer from thread contention) while pydensecrf is single-threaded, one reason ``"auto"`` picks
pydensecrf on the CPU. ``benchmarks/bench_core.py`` prints both backends.

Images are ``(B, 3, H, W)`` uint8 RGB tensors (the layout of the dataset's ``image_uint8``);
probabilities are ``(B, L, H, W)``. Images of a batch may use different label subsets: the
caller packs each image's labels first and passes ``num_labels``; channels past that are ignored
and returned as zero probability.
"""
from __future__ import annotations

import math
import weakref
from concurrent.futures import Executor, ProcessPoolExecutor
from dataclasses import asdict, dataclass
from multiprocessing import get_context
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

CRF_BACKENDS = ("auto", "pydensecrf", "torch")
UNARY_CLIP = 1e-5  # pydensecrf.utils.unary_from_softmax's default clip


@dataclass(frozen=True)
class CRFParams:
    """Kernel widths and Potts weights (psa's deeplab-style settings, used by OSTE's Eq 11)."""

    gaussian_sxy: float = 3.0
    gaussian_compat: float = 3.0
    bilateral_sxy: float = 80.0
    bilateral_srgb: float = 13.0
    bilateral_compat: float = 10.0


def pydensecrf_available() -> bool:
    """True when the ``pydensecrf`` extension (package ``pydensecrf2``) imports."""
    try:
        import pydensecrf.densecrf  # noqa: F401
    except ImportError:
        return False
    return True


class DenseCRF:
    """Dense CRF over a batch: ``crf(images, probs)`` gives labels, ``probabilities`` gives Q."""

    backend: str = ""

    def __init__(self, iters: int = 10, params: CRFParams | None = None) -> None:
        if iters < 0:
            raise ValueError(f"CRF iterations must be >= 0, got {iters}")
        self.iters = int(iters)
        self.params = params or CRFParams()

    def __call__(self, images: Tensor, probs: Tensor, num_labels: Sequence[int] | None = None) -> Tensor:
        """Labels ``(B, H, W)`` long: the argmax of Q over each image's first ``num_labels[b]`` labels."""
        return self.probabilities(images, probs, num_labels).argmax(dim=1)

    def probabilities(self, images: Tensor, probs: Tensor, num_labels: Sequence[int] | None = None) -> Tensor:
        """Mean-field marginals Q ``(B, L, H, W)`` float32 on ``probs.device`` (unused labels are 0)."""
        counts = _check_inputs(images, probs, num_labels)
        out = torch.zeros(probs.shape, dtype=torch.float32, device=probs.device)
        for index, q in enumerate(self._infer(images, probs, counts)):
            out[index, : counts[index]] = q.to(out.device)
        return out

    def _infer(self, images: Tensor, probs: Tensor, counts: list[int]) -> list[Tensor]:
        raise NotImplementedError

    def close(self) -> None:
        """Release worker processes, if any."""


def _check_inputs(images: Tensor, probs: Tensor, num_labels: Sequence[int] | None) -> list[int]:
    if not torch.is_tensor(images) or images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] != 3:
        shape = tuple(images.shape) if hasattr(images, "shape") else type(images).__name__
        raise ValueError(f"CRF images must be a (B, 3, H, W) uint8 tensor, got {shape} "
                         f"{getattr(images, 'dtype', '')}")
    if not torch.is_tensor(probs) or probs.dim() != 4:
        raise ValueError(f"CRF probabilities must be a (B, L, H, W) tensor, got {getattr(probs, 'shape', probs)}")
    batch, labels, height, width = probs.shape
    if (images.shape[0], images.shape[2], images.shape[3]) != (batch, height, width):
        raise ValueError(f"CRF images {tuple(images.shape)} and probabilities {tuple(probs.shape)} "
                         "differ in batch size or H x W")
    counts = [labels] * batch if num_labels is None else [int(n) for n in num_labels]
    if len(counts) != batch or any(not 1 <= n <= labels for n in counts):
        raise ValueError(f"num_labels must give 1..{labels} labels for each of the {batch} images, got {counts}")
    return counts


def pydensecrf_inference(image_hwc: np.ndarray, probs: np.ndarray, iters: int, params: dict) -> np.ndarray:
    """One image with pydensecrf: ``(H, W, 3)`` uint8 and ``(L, H, W)`` probabilities -> Q ``(L, H, W)``.

    A top-level function so a spawn-started process pool can run it.
    """
    import pydensecrf.densecrf as dcrf

    labels, height, width = probs.shape
    crf = dcrf.DenseCRF2D(width, height, labels)
    unary = -np.log(np.clip(probs, UNARY_CLIP, 1.0)).reshape(labels, -1)
    crf.setUnaryEnergy(np.ascontiguousarray(unary, dtype=np.float32))
    crf.addPairwiseGaussian(sxy=params["gaussian_sxy"], compat=params["gaussian_compat"])
    crf.addPairwiseBilateral(sxy=params["bilateral_sxy"], srgb=params["bilateral_srgb"],
                             rgbim=np.ascontiguousarray(image_hwc, dtype=np.uint8),
                             compat=params["bilateral_compat"])
    return np.asarray(crf.inference(iters), dtype=np.float32).reshape(labels, height, width)


class PydenseCRF(DenseCRF):
    """Exact CPU backend (``pydensecrf``); ``workers > 0`` spreads a batch over a process pool."""

    backend = "pydensecrf"

    def __init__(self, iters: int = 10, params: CRFParams | None = None, workers: int = 0) -> None:
        if not pydensecrf_available():
            raise ImportError("CRF backend 'pydensecrf' needs the pydensecrf extension: "
                              "pip install pydensecrf2, or set model.crf_backend=torch")
        super().__init__(iters, params)
        self.workers = int(workers)
        self._pool: Executor | None = None

    def _executor(self) -> Executor:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(self.workers, mp_context=get_context("spawn"))
            weakref.finalize(self, self._pool.shutdown, cancel_futures=True)
        return self._pool

    def _infer(self, images: Tensor, probs: Tensor, counts: list[int]) -> list[Tensor]:
        pixels = images.permute(0, 2, 3, 1).contiguous().cpu().numpy()
        probs_np = probs.detach().float().cpu().numpy()
        jobs = [(pixels[b], probs_np[b, : counts[b]], self.iters, asdict(self.params)) for b in range(len(counts))]
        if self.workers > 0 and len(jobs) > 1:
            results = list(self._executor().map(pydensecrf_inference, *zip(*jobs)))
        else:
            results = [pydensecrf_inference(*job) for job in jobs]
        return [torch.from_numpy(q) for q in results]

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None


class TorchDenseCRF(DenseCRF):
    """Mean field in PyTorch on ``device`` (default: the device of the probabilities)."""

    backend = "torch"

    def __init__(self, iters: int = 10, params: CRFParams | None = None, device: torch.device | str | None = None,
                 bin_xy: float = 0.5, bin_rgb: float = 1.0, max_bins: int = 2048) -> None:
        super().__init__(iters, params)
        self.device = torch.device(device) if device is not None else None
        self.bin_xy = bin_xy
        self.bin_rgb = bin_rgb
        self.max_bins = max_bins

    def _infer(self, images: Tensor, probs: Tensor, counts: list[int]) -> list[Tensor]:
        device = self.device or probs.device
        results = []
        for b, count in enumerate(counts):
            image = images[b].to(device).float()
            p = probs[b, :count].detach().to(device).float()
            results.append(self._mean_field(image, p))
        return results

    def _mean_field(self, image: Tensor, probs: Tensor) -> Tensor:
        labels, height, width = probs.shape
        prm = self.params
        unary = -probs.clamp(UNARY_CLIP, 1.0).log().reshape(labels, -1)
        taps = _gaussian_taps(prm.gaussian_sxy, image.device)
        gauss_norm = _blur(torch.ones(1, height, width, device=image.device), taps).rsqrt().reshape(1, -1)
        cells, kernel, cell_norm = self._bilateral_grid(image)
        q = torch.softmax(-unary, dim=0)
        for _ in range(self.iters):
            gauss = gauss_norm * _blur((q * gauss_norm).reshape(labels, height, width), taps).reshape(labels, -1)
            summed = torch.zeros(labels, kernel.shape[0], device=q.device).index_add_(1, cells, q)
            bilateral = (cell_norm * ((summed * cell_norm) @ kernel))[:, cells]
            q = torch.softmax(-unary + prm.gaussian_compat * gauss + prm.bilateral_compat * bilateral, dim=0)
        return q.reshape(labels, height, width)

    def _bilateral_grid(self, image: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Cell index of every pixel (N,), the cell-to-cell Gaussian (M, M) and its normalisation (1, M)."""
        _, height, width = image.shape
        prm = self.params
        ys, xs = torch.meshgrid(torch.arange(height, device=image.device, dtype=torch.float32),
                                torch.arange(width, device=image.device, dtype=torch.float32), indexing="ij")
        features = torch.cat([torch.stack([xs, ys]) / prm.bilateral_sxy, image / prm.bilateral_srgb]).reshape(5, -1).T
        widths = torch.tensor([self.bin_xy] * 2 + [self.bin_rgb] * 3, device=image.device)
        while True:
            coords = torch.floor(features / widths).long()
            coords -= coords.min(dim=0).values
            sizes = coords.max(dim=0).values + 1
            key = coords[:, 0]
            for dim in range(1, 5):
                key = key * sizes[dim] + coords[:, dim]
            occupied = torch.bincount(key, minlength=int(torch.prod(sizes)))
            if int((occupied > 0).sum()) <= self.max_bins:
                break
            widths = widths * 1.25
        cell_of_key = torch.cumsum(occupied > 0, dim=0) - 1
        cells = cell_of_key[key]
        num_cells = int(cells.max()) + 1
        counts = torch.bincount(cells, minlength=num_cells).float()
        centres = torch.zeros(num_cells, 5, device=image.device).index_add_(0, cells, features) / counts[:, None]
        kernel = _gaussian_kernel(centres)
        cell_norm = (kernel @ counts).rsqrt()[None]
        return cells, kernel, cell_norm


def _gaussian_kernel(points: Tensor) -> Tensor:
    """exp(-|a - b|^2 / 2) between all rows of (M, d) ``points``: one matmul and one exp.

    -|a - b|^2 / 2 = a.b - |a|^2 / 2 - |b|^2 / 2, written as one product of augmented rows.
    """
    half_norm = 0.5 * points.square().sum(dim=1, keepdim=True)
    ones = torch.ones_like(half_norm)
    left = torch.cat([points, -half_norm, ones], dim=1)
    right = torch.cat([points, ones, -half_norm], dim=1)
    return (left @ right.T).clamp_max_(0.0).exp_()


def _gaussian_taps(sigma: float, device: torch.device) -> Tensor:
    """1-D Gaussian exp(-d^2 / 2 sigma^2) for |d| <= 4 sigma (pydensecrf's kernels are unnormalised too)."""
    radius = math.ceil(4.0 * sigma)
    offsets = torch.arange(-radius, radius + 1, device=device, dtype=torch.float32)
    return torch.exp(-offsets.square() / (2.0 * sigma * sigma))


def _blur(values: Tensor, taps: Tensor) -> Tensor:
    """Separable Gaussian of (C, H, W) values, zero outside the image: two 1-D convolutions."""
    channels, height, width = values.shape
    radius = (taps.numel() - 1) // 2
    kernel = taps.view(1, 1, -1)
    rows = F.conv1d(values.reshape(channels * height, 1, width), kernel, padding=radius)
    columns = rows.reshape(channels, height, width).transpose(1, 2).reshape(channels * width, 1, height)
    return F.conv1d(columns, kernel, padding=radius).reshape(channels, width, height).transpose(1, 2)


def make_crf(backend: str = "auto", iters: int = 10, workers: int = 0,
             device: torch.device | str | None = None, params: CRFParams | None = None) -> DenseCRF:
    """Build a CRF backend.

    ``"auto"`` picks ``"torch"`` when ``device`` is an accelerator (CUDA or MPS: the CRF then runs next
    to the training step without a round trip to the CPU), otherwise ``"pydensecrf"`` when it imports,
    else ``"torch"``. ``workers`` is used by ``"pydensecrf"`` only.
    """
    if backend not in CRF_BACKENDS:
        raise ValueError(f"unknown CRF backend {backend!r}; choose one of {', '.join(CRF_BACKENDS)}")
    on_accelerator = device is not None and torch.device(device).type != "cpu"
    if backend == "auto":
        backend = "torch" if on_accelerator or not pydensecrf_available() else "pydensecrf"
    if backend == "pydensecrf":
        return PydenseCRF(iters, params, workers=workers)
    return TorchDenseCRF(iters, params, device=device)
