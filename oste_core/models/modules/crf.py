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
import os
import weakref
from concurrent.futures import Executor, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass
from multiprocessing import get_context
from typing import Callable, Sequence

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
        return self._infer(images, probs, counts).to(probs.device)

    def probabilities_later(self, images: Tensor, probs: Tensor,
                            num_labels: Sequence[int] | None = None) -> Callable[[], Tensor]:
        """`probabilities`, started now and returned by calling the result: a backend that can run it beside the
        caller's work (``PydenseCRF`` on a free core) does; the others compute it at once."""
        marginals = self.probabilities(images, probs, num_labels)
        return lambda: marginals

    def _infer(self, images: Tensor, probs: Tensor, counts: list[int]) -> Tensor:
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

    def _infer(self, images: Tensor, probs: Tensor, counts: list[int]) -> Tensor:
        pixels = images.permute(0, 2, 3, 1).contiguous().cpu().numpy()
        probs_np = probs.detach().float().cpu().numpy()
        jobs = [(pixels[b], probs_np[b, : counts[b]], self.iters, asdict(self.params)) for b in range(len(counts))]
        if self.workers > 0 and len(jobs) > 1:
            results = list(self._executor().map(pydensecrf_inference, *zip(*jobs)))
        else:
            results = [pydensecrf_inference(*job) for job in jobs]
        out = torch.zeros(probs.shape, dtype=torch.float32)
        for b, q in enumerate(results):
            out[b, : counts[b]] = torch.from_numpy(q)
        return out

    def probabilities_later(self, images: Tensor, probs: Tensor,
                            num_labels: Sequence[int] | None = None) -> Callable[[], Tensor]:
        """One image's marginals in a helper process (`background_pool`) while the caller goes on: on two cores
        the suggestion's CRF runs beside FBE's. Without a second core, computed at once."""
        counts = _check_inputs(images, probs, num_labels)
        pool = background_pool()
        if pool is None or len(counts) != 1:
            return super().probabilities_later(images, probs, num_labels)
        pixels = images[0].permute(1, 2, 0).contiguous().cpu().numpy()
        job_args = (pixels, probs[0, : counts[0]].detach().float().cpu().numpy(), self.iters, asdict(self.params))
        try:
            job = pool.submit(pydensecrf_inference, *job_args)
        except BrokenProcessPool:  # the helper died or could not start: in-process from now on
            _BACKGROUND[:] = [None]
            return super().probabilities_later(images, probs, num_labels)

        def result() -> Tensor:
            try:
                marginals = job.result()
            except BrokenProcessPool:  # the helper could not start (a script without a __main__ guard): in-process
                _BACKGROUND[:] = [None]
                marginals = pydensecrf_inference(*job_args)
            out = torch.zeros(probs.shape, dtype=torch.float32)
            out[0, : counts[0]] = torch.from_numpy(marginals)
            return out.to(probs.device)
        return result

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None


_BACKGROUND: list[Executor | None] = []  # [] not started yet, [None] unusable


def background_pool() -> Executor | None:
    """A one-process pool (spawned once, shared) for a CRF beside the caller's work; None on a single core or
    once it failed to start."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if cores < 2:
        return None
    if not _BACKGROUND:
        pool = ProcessPoolExecutor(1, mp_context=get_context("spawn"))
        pool.submit(os.getpid)  # the helper starts now (about 2 s on two cores), not at the first CRF
        _BACKGROUND.append(pool)
    return _BACKGROUND[0]


class TorchDenseCRF(DenseCRF):
    """Mean field in PyTorch on ``device`` (default: the device of the probabilities), a whole batch at once.

    Every step is a batched tensor op (no per-image Python loop): the grid cells of all images are
    numbered together and padded to the largest image's count, so the cell-to-cell kernels form one
    ``(B, M, M)`` tensor. Host syncs: one per grid-widening round (usually one) and one for ``M``.
    """

    backend = "torch"

    def __init__(self, iters: int = 10, params: CRFParams | None = None, device: torch.device | str | None = None,
                 bin_xy: float = 0.5, bin_rgb: float = 1.0, max_bins: int = 2048) -> None:
        super().__init__(iters, params)
        self.device = torch.device(device) if device is not None else None
        self.bin_xy = bin_xy
        self.bin_rgb = bin_rgb
        self.max_bins = max_bins

    def _infer(self, images: Tensor, probs: Tensor, counts: list[int]) -> Tensor:
        device = self.device or probs.device
        images = images.to(device).float()
        probs = probs.detach().to(device).float()
        batch, labels, height, width = probs.shape
        prm = self.params
        used = torch.arange(labels, device=device)[None, :] < torch.tensor(counts, device=device)[:, None]
        logits = probs.clamp(UNARY_CLIP, 1.0).log().reshape(batch, labels, -1)
        logits = logits.masked_fill(~used[:, :, None], float("-inf"))  # unused labels get Q = 0
        taps = _gaussian_taps(prm.gaussian_sxy, device)
        gauss_norm = _blur(torch.ones(1, height, width, device=device), taps).rsqrt().reshape(1, 1, -1)
        cells, kernel, cell_norm = self._bilateral_grid(images)
        index = cells[:, None, :].expand(batch, labels, -1)
        q = torch.softmax(logits, dim=1)
        for _ in range(self.iters):
            gauss = _blur((q * gauss_norm).reshape(batch * labels, height, width), taps)
            gauss = gauss_norm * gauss.reshape(batch, labels, -1)
            summed = q.new_zeros(batch, labels, kernel.shape[1]).scatter_add_(2, index, q)
            bilateral = (cell_norm * torch.bmm(summed * cell_norm, kernel)).gather(2, index)
            q = torch.softmax(logits + prm.gaussian_compat * gauss + prm.bilateral_compat * bilateral, dim=1)
        return q.reshape(batch, labels, height, width)

    def _bilateral_grid(self, images: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Cell of every pixel ``(B, N)``, cell-to-cell Gaussians ``(B, M, M)`` and normalisation ``(B, 1, M)``.

        Pixels are binned in (x/sxy, y/sxy, rgb/srgb) with cells of ``bin_xy`` x ``bin_rgb``; an image
        whose occupied cells exceed ``max_bins`` gets cells 1.25x wider, round by round. Cells are padded
        to M per image; empty padding cells hold no pixels and so send no message.
        """
        batch, _, height, width = images.shape
        prm, device = self.params, images.device
        ys, xs = torch.meshgrid(torch.arange(height, device=device, dtype=torch.float32),
                                torch.arange(width, device=device, dtype=torch.float32), indexing="ij")
        position = (torch.stack([xs, ys]) / prm.bilateral_sxy).expand(batch, 2, height, width)
        features = torch.cat([position, images / prm.bilateral_srgb], dim=1).reshape(batch, 5, -1).transpose(1, 2)
        base = torch.tensor([self.bin_xy] * 2 + [self.bin_rgb] * 3, device=device)
        widening = torch.ones(batch, device=device)
        while True:
            inverse, occupied = _cells_per_image(_cell_keys(features, base * widening[:, None]))
            too_many = occupied > self.max_bins
            if not bool(too_many.any()):
                break
            widening = torch.where(too_many, widening * 1.25, widening)
        first_cell = torch.cumsum(occupied, dim=0) - occupied  # global id of each image's first cell
        cells = inverse - first_cell[:, None]
        num_cells = int(occupied.max())
        flat = cells + torch.arange(batch, device=device)[:, None] * num_cells
        pixel_counts = torch.bincount(flat.reshape(-1), minlength=batch * num_cells).float()
        centres = torch.zeros(batch * num_cells, 5, device=device).index_add_(0, flat.reshape(-1), features.reshape(-1, 5))
        centres = (centres / pixel_counts.clamp_min(1.0)[:, None]).reshape(batch, num_cells, 5)
        pixel_counts = pixel_counts.reshape(batch, num_cells, 1)
        kernel = gaussian_kernel(*gaussian_factors(centres))
        cell_norm = torch.bmm(kernel, pixel_counts).clamp_min(1.0).rsqrt().transpose(1, 2)
        return cells, kernel, cell_norm


def _cell_keys(features: Tensor, widths: Tensor) -> Tensor:
    """Integer cell key ``(B, N)`` of every pixel, unique within its image, for per-image cell ``widths`` (B, 5)."""
    coords = torch.floor(features / widths[:, None, :]).long()
    coords = coords - coords.amin(dim=1, keepdim=True)
    sizes = coords.amax(dim=(0, 1)) + 1
    key = coords[..., 0]
    for dim in range(1, 5):
        key = key * sizes[dim] + coords[..., dim]
    return key


def _cells_per_image(keys: Tensor) -> tuple[Tensor, Tensor]:
    """Global cell id of every pixel ``(B, N)`` (ids sorted by image, then key) and occupied cells per image (B,)."""
    batch = keys.shape[0]
    span = keys.max() + 1
    global_keys = keys + torch.arange(batch, device=keys.device)[:, None] * span
    unique_keys, inverse = torch.unique(global_keys, return_inverse=True)
    occupied = torch.bincount(torch.div(unique_keys, span, rounding_mode="floor"), minlength=batch)
    return inverse, occupied


def gaussian_factors(points: Tensor) -> tuple[Tensor, Tensor]:
    """Augmented rows (left, right) of ``points`` (..., M, d) with left_a . right_b = -|a - b|^2 / 2.

    -|a - b|^2 / 2 = a.b - |a|^2 / 2 - |b|^2 / 2: each side carries its half norm and a one.
    """
    half_norm = 0.5 * points.square().sum(dim=-1, keepdim=True)
    ones = torch.ones_like(half_norm)
    return torch.cat([points, -half_norm, ones], dim=-1), torch.cat([points, ones, -half_norm], dim=-1)


def gaussian_kernel(left: Tensor, right: Tensor) -> Tensor:
    """exp(-|a - b|^2 / 2) between rows a of ``left`` (..., M, d+2) and rows b of ``right`` (..., N, d+2),
    both from ``gaussian_factors`` (a slice of the left factor gives a block of rows): one matmul, one exp."""
    return (left @ right.transpose(-1, -2)).clamp_max_(0.0).exp_()


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
