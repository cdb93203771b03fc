"""Frozen-backbone feature cache: the fast mode computes each image's backbone features once.

With ``train.freeze_backbone`` the backbone never changes, so its features of an image (the stages the
heads and MAF read, and the last stage of every LEM tile) are the same at every iteration. They are
computed once per image at the working size (longest side ``train.fast_max_side``), stored as one file
per image under ``<run>/features/``, and the heads (CAM classifier, MAF projections,
segmentation head) train on them: an iteration costs the heads, FBE and the losses, not the backbone.
Each map has a float16 scale per channel: the last stage (after ReLU6) is stored in uint8 steps of 1/255 of
the channel's maximum, the LEM tiles (two thirds of the bytes) in 4-bit steps of 1/15, the other stages (signed)
in int8 steps of 1/127 of the channel's largest magnitude, in a deflate-compressed ``.npz``; the working-size
image itself is not stored but decoded again from its file (the same pixels). About 0.8 MB for a 320 x 240
photo with EfficientNet-Lite0 and both LEM grids (5.5 MB uncompressed), 0.5 MB at the prediction scale 1.5.

``features/`` is bounded by ``train.feature_cache_mb`` (``cache_cap_mb``): past it, the least recently used
files are deleted, the prediction-scale ones first, and recomputed when needed again (lossless, it only
costs time). Values in memory are what a file holds: a file read back gives the same features.

A file's name is a hash of everything its content depends on: the image file (path, size, modification
time), the backbone and its weights, the output stride, the working size, the LEM grids and the stages
kept. A changed image or setting therefore misses the cache and is recomputed; stale files are deleted
by ``prune``. A file that cannot be read (a crash mid-write cannot leave one: writes are atomic, but a
disk can fail) is logged, deleted and recomputed. Before the first new file is written, the free space is
checked against its size times the images still to cache (`plan`); a disk full then or later raises
`DiskFullError`, and the run stays resumable (the files written so far are kept).

The predictor's cache (``scale`` = ``train.fast_predict_scale``) holds the same stage features of the working-size
image enlarged by that factor, in ``<run>/features/x<scale>/``: predictions are made there. It keeps no LEM tiles
(``grids`` empty): the predictor merges the working-size tiles instead, which saves two thirds of the backbone's
time at that scale for 0.3 points on ``mix/`` (``docs/EXPERIMENTS.md``, 2026-12-04 evening).
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from oste_core.config import ModelConfig
from oste_core.data.image_io import downscale, load_image, rescale
from oste_core.models import OSTEModel
from oste_core.models.backbones.conv_bn import reuse_folded_weights
from oste_core.models.modules.lem import image_tiles
from oste_core.utils.disk import DiskFullError, check_free_space, format_bytes, free_bytes
from oste_core.utils.io import atomic_write_bytes, is_disk_full

log = logging.getLogger(__name__)

CACHE_DIR = "features"
FORMAT_VERSION = 4
DISK_FULL_HINT = ("the run folder is kept: free some space (a run's features/ folder can be deleted: it is rebuilt), "
                  "then resume the run or update it again")
SUFFIX = ".npz"
TILE_BITS = 4  # LEM tile features: 4 bits move their CAMs by about 1.5% (L2) and halve their files
AUTO_MB_PER_IMAGE = 4.0  # train.feature_cache_mb = 0: this many MB per image (both scales of a 320 px photo fit)


def cache_cap_mb(feature_cache_mb: float, images: int) -> float:
    """The cap on ``features/`` in MB: ``train.feature_cache_mb``, 0 = ``AUTO_MB_PER_IMAGE`` per image, < 0 = none."""
    if feature_cache_mb < 0:
        return math.inf
    return feature_cache_mb if feature_cache_mb > 0 else AUTO_MB_PER_IMAGE * max(images, 1)


def pack(features: Tensor, bits: int = 8) -> dict[str, Tensor]:
    """(C, h, w) features for storage, with a float16 scale per channel: non-negative ones in ``bits`` (8 or 4,
    two values a byte) unsigned steps of the channel's maximum, the others in int8 steps of its largest magnitude."""
    if float(features.min()) < 0:
        scale = features.flatten(-2).abs().amax(dim=-1).clamp_min(1e-6)[..., None, None]
        return {"int8": torch.round(features / scale * 127).to(torch.int8).cpu(), "scale": scale.half().cpu()}
    scale = features.flatten(-2).amax(dim=-1).clamp_min(1e-6)[..., None, None]
    steps = torch.round(features / scale * (2**bits - 1)).to(torch.uint8).cpu()
    if bits == 8:
        return {"uint8": steps, "scale": scale.half().cpu()}
    flat = steps.flatten()
    flat = torch.cat([flat, flat.new_zeros(flat.numel() % 2)])
    return {"uint4": flat[0::2] << 4 | flat[1::2], "shape": torch.tensor(steps.shape), "scale": scale.half().cpu()}


def unpack(packed: dict[str, Tensor], device: torch.device) -> Tensor:
    """float32 features from ``pack``'s dict."""
    scale = packed["scale"].to(device).float()
    if "int8" in packed:
        return packed["int8"].to(device).float() * (scale / 127)
    if "uint8" in packed:
        return packed["uint8"].to(device).float() * (scale / 255)
    shape = [int(side) for side in packed["shape"]]
    nibbles = packed["uint4"].to(device)
    steps = torch.stack([nibbles >> 4, nibbles & 15], dim=1).flatten()[: math.prod(shape)].reshape(shape)
    return steps.float() * (scale / 15)


@dataclass
class ImageFeatures:
    """One image's cached inputs: uint8 RGB at the working size, stage features, LEM tile features."""

    image_uint8: Tensor  # (3, H, W) uint8
    stages: dict[int, dict[str, Tensor]]  # 1-based stage -> packed (C, h, w) features (``pack``)
    tiles: dict[int, dict[str, Tensor]]  # grid n -> packed (n*n, C, h', w'), the last stage of each tile

    def stage_list(self, count: int, device: torch.device) -> list[Tensor | None]:
        """The stages as ``OSTEModel.forward_features`` takes them: a batch of one, float32, None if not kept."""
        return [unpack(self.stages[s], device)[None] if s in self.stages else None for s in range(1, count + 1)]

    def tile_batch(self, device: torch.device) -> dict[int, Tensor]:
        return {n: unpack(t, device) for n, t in self.tiles.items()}


class FeatureCache:
    """Computes, stores and loads ``ImageFeatures`` of a frozen backbone for one run."""

    def __init__(self, run_dir: str | Path, model: OSTEModel, backbone_id: str, max_side: int, load_max_side: int,
                 device: torch.device, keep_in_memory_mb: float = 2048.0, scale: float = 1.0,
                 cap_mb: float = math.inf, grids: tuple[int, ...] | None = None) -> None:
        self.scale = float(scale)
        self.grids = tuple(model.lem_grids) if grids is None else tuple(grids)  # the LEM grids whose tiles are kept
        self.root = Path(run_dir) / CACHE_DIR  # the cap counts every scale's files under it
        self.directory = self.root
        self.cap_bytes = cap_mb * 2**20
        if self.scale != 1.0:
            self.directory = self.directory / f"x{self.scale:g}"
        self.model = model
        self.max_side = max_side
        self.load_max_side = load_max_side  # images are loaded as everywhere else (train.max_side), then downscaled
        self.device = device
        self.stages = sorted(set(model.maf_stages) | {len(model.backbone.stage_channels)})
        settings = {
            "version": FORMAT_VERSION, "backbone": backbone_id, "output_stride": model.backbone.output_stride,
            "max_side": max_side, "load_max_side": load_max_side, "grids": list(self.grids), "stages": self.stages,
        }
        if self.scale != 1.0:
            settings["scale"] = self.scale
        self._settings = json.dumps(settings, sort_keys=True)
        self._memory: dict[str, ImageFeatures] = {}
        self._memory_budget = keep_in_memory_mb * 2**20
        self._memory_used = 0.0
        self.rebuilt: list[str] = []  # files that could not be read and were recomputed
        self._planned = 0  # images still to cache, for the free-space check before the first write

    def plan(self, count: int) -> None:
        """``count`` images are about to be cached: the first new file checks there is room for them all."""
        self._planned = count

    def key(self, image_path: str | Path) -> str:
        """Hash of the image file's identity and every setting the features depend on."""
        path = Path(image_path).resolve()
        stat = path.stat()
        text = f"{self._settings}|{path}|{stat.st_size}|{stat.st_mtime_ns}"
        return hashlib.sha1(text.encode("utf-8")).hexdigest()[:24]

    def get(self, image_path: str | Path) -> ImageFeatures:
        """The image's features: from memory, from disk, or computed now (``ImageLoadError`` if unreadable)."""
        key = self.key(image_path)
        if key in self._memory:
            return self._memory[key]
        file = self.file(image_path)
        image = load_image(image_path, max_side=self.load_max_side)
        features = self._read(file, image) if file.exists() else None
        if features is None:
            features = self.compute(self.working_image(image))
            self._write(file, features)
        self._remember(key, features)
        return features

    def file(self, image_path: str | Path) -> Path:
        """Where the image's features are (or would be) stored."""
        return self.directory / f"{self.key(image_path)}{SUFFIX}"

    def has(self, image_path: str | Path) -> bool:
        """True when ``get`` would not compute the image's features (in memory or on disk)."""
        return self.key(image_path) in self._memory or self.file(image_path).exists()

    def _write(self, file: Path, features: ImageFeatures) -> None:
        arrays = {f"{kind}{index}.{name}": tensor.numpy()
                  for kind, maps in (("stage", features.stages), ("tile", features.tiles))
                  for index, packed in maps.items() for name, tensor in packed.items()}
        buffer = io.BytesIO()
        np.savez_compressed(buffer, **arrays)
        data = buffer.getvalue()
        self.directory.mkdir(parents=True, exist_ok=True)
        if self._planned > 0:
            count, self._planned = self._planned, 0
            check_free_space(self.directory, len(data) * count, f"the backbone features of {count} image(s)",
                             hint=DISK_FULL_HINT)
        try:
            atomic_write_bytes(file, data)
        except OSError as exc:
            if not is_disk_full(exc):
                raise
            raise DiskFullError(f"{self.directory}: the disk filled up while caching backbone features "
                                f"({format_bytes(free_bytes(self.directory))} free); {DISK_FULL_HINT}") from exc
        self._enforce_cap(file)

    def _read(self, file: Path, image: np.ndarray) -> ImageFeatures | None:
        try:
            stages: dict[int, dict[str, Tensor]] = {}
            tiles: dict[int, dict[str, Tensor]] = {}
            with np.load(file, allow_pickle=False) as data:
                for name in data.files:
                    where, part = name.split(".")
                    maps, index = (stages, where[5:]) if where.startswith("stage") else (tiles, where[4:])
                    maps.setdefault(int(index), {})[part] = torch.from_numpy(data[name])
            os.utime(file)  # the cap deletes the least recently used files first
        except Exception as exc:  # noqa: BLE001 - any unreadable cache file is recomputed
            log.warning("%s: unreadable feature cache file (%s); recomputing it", file, exc)
            self.rebuilt.append(str(file))
            file.unlink(missing_ok=True)
            return None
        pixels = torch.from_numpy(np.array(self.working_image(image), dtype=np.uint8, copy=True)).permute(2, 0, 1)
        return ImageFeatures(pixels.contiguous(), stages, tiles)

    def _enforce_cap(self, written: Path) -> None:
        """Delete least recently used files under ``features/`` until it fits the cap: prediction-scale files first,
        then working-size ones; a prediction-scale write never deletes working-size features (it deletes itself)."""
        if math.isinf(self.cap_bytes):
            return
        files = []
        for file in self._files(self.root, recursive=True):
            try:
                files.append((file, file.stat()))
            except FileNotFoundError:  # deleted meanwhile by another process (the GUI's predictor, a DDP rank)
                continue
        total = sum(stat.st_size for _, stat in files)
        working = written.parent == self.root
        order = sorted((item for item in files if working or item[0].parent != self.root),
                       key=lambda item: (item[0].parent == self.root, item[1].st_mtime_ns))
        for file, stat in order:
            if total <= self.cap_bytes:
                break
            file.unlink(missing_ok=True)
            total -= stat.st_size

    @staticmethod
    def _files(directory: Path, recursive: bool = False) -> list[Path]:
        """Cache files (both formats) in ``directory``, sorted; temp files (a write in progress) left out."""
        if not directory.is_dir():
            return []
        found = [f for suffix in (SUFFIX, ".pt")
                 for f in (directory.rglob(f"*{suffix}") if recursive else directory.glob(f"*{suffix}"))]
        return sorted(f for f in found if not f.name.startswith("."))

    def _remember(self, key: str, features: ImageFeatures) -> None:
        size = sum(t.numel() * t.element_size() for packed in [*features.stages.values(), *features.tiles.values()]
                   for t in packed.values())
        if self._memory_used + size <= self._memory_budget:
            self._memory[key] = features
            self._memory_used += size

    def working_image(self, image: np.ndarray) -> np.ndarray:
        """``image`` at this cache's size: longest side at most ``max_side``, then enlarged by ``scale``."""
        return rescale(downscale(image, self.max_side), self.scale)

    @torch.no_grad()
    def compute(self, image: np.ndarray) -> ImageFeatures:
        """Backbone features of one (H, W, 3) uint8 image at its own size (no flip, one scale)."""
        backbone = self.model.backbone
        pixels = torch.from_numpy(np.array(image, dtype=np.uint8, copy=True)).permute(2, 0, 1)
        x = backbone.normalise(pixels[None].to(self.device))
        was_training = backbone.training
        backbone.eval()
        try:
            with reuse_folded_weights():
                stages = backbone(x)
                tiles = {n: backbone(image_tiles(x, n, self.model.feature_stride))[-1] for n in self.grids}
        finally:
            backbone.train(was_training)
        return ImageFeatures(
            image_uint8=pixels.clone(),
            stages={s: pack(stages[s - 1][0]) for s in self.stages},
            tiles={n: pack(t, bits=TILE_BITS) for n, t in tiles.items()},
        )

    def prune(self, keep: set[str]) -> int:
        """Delete cache files whose key is not in ``keep`` (images or settings that changed); their count.
        Temp files (another process's write in progress, e.g. a second DDP rank) are left alone."""
        removed = 0
        for file in self._files(self.directory):
            if file.stem not in keep or file.suffix != SUFFIX:  # an older format's files are stale too
                file.unlink(missing_ok=True)
                removed += 1
        return removed


def backbone_identity(model_cfg: ModelConfig) -> str:
    """What the cached features depend on in the model settings: the backbone and its weights."""
    weights = model_cfg.pretrained
    path = Path(weights)
    if weights not in ("auto", "none") and path.is_file():
        stat = path.stat()
        weights = f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}"
    return f"{model_cfg.backbone}|{weights}"
