"""Every photo's suggestion kept in the run, so that nothing is computed twice: ``<run>/suggestions/``.

Two files per photo, named by the run's identity (its weights' digest and its settings) and the photo's feature key (the image file and the backbone
settings, ``FeatureCache.key``):

    <run>-<photo>.state.npz       its ``ImageState``: what a refit of the pixel classifier does not change
                                   (the network's maps, the prior-mixed maps, the trained classifier's logits,
                                   the compact descriptors a refit and the seeds read), 8 bits
    <run>-<photo>.result.npz     its last suggestion, FBE pseudo-label and their key (tags, verified mask,
                                   corrections, the classifier's refit): reused while the key is the same

The end of a training fills it (every suggestion ready), an export or a refresh reuses it, and a newer
``model.pt`` (an update) makes every file stale: ``prune`` deletes them. A state replaces the photo's
prediction-scale backbone features, which are then deleted. Writes are atomic; an unreadable file is deleted
and computed again.
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from oste_core.config import OSTEConfig
from oste_core.utils.io import atomic_write_bytes

log = logging.getLogger(__name__)

STORE_DIR = "suggestions"
MAP_NAMES = ("cam", "merged_cam", "enhanced_cam", "seg_logits")
SIGNED = ("compact", "seed_descriptors", "seg_logits", "probe_logits")  # int8, a step of 1/127 of each channel's peak
UNIT_MAPS = ("priors_mixed",)  # in [0, 1]: stored in uint8
SHOWN_MAPS = ("cam", "merged_cam", "enhanced_cam")  # only shown, each class scaled to its peak: uint8 of that
FORMAT_VERSION = 3


@dataclass
class ImageState:
    """What a refit of the pixel classifier does not change about one image: its pixels, the network's maps (on
    the feature grid in the fast mode), the enhanced CAM mixed with every class prior but the classifier, the
    trained classifier's logits, the descriptors in the teaching sample's compact space (a refit's classifier
    reads them) and what the seeds compare. ``out``: every map, kept only when the MAF refinement needs them."""

    pixels: torch.Tensor  # (1, 3, H, W) uint8
    maps: dict  # cam, merged_cam, enhanced_cam (K, h, w), seg_logits (K + 1, h, w)
    priors_mixed: torch.Tensor | None  # (K, h, w) in [0, 1]
    probe_logits: torch.Tensor | None  # (K + 1, h, w)
    compact: torch.Tensor | None  # (d, h, w)
    seed_descriptors: torch.Tensor | None  # (d or C, h, w)
    out: dict | None

    @property
    def storable(self) -> bool:
        """True when the state is whole without ``out`` (the MAF refinement, opt-in, needs every stage)."""
        return self.out is None and self.priors_mixed is not None


def weights_digest(path: str | Path) -> str:
    """A digest of a weights file's bytes: a copied run keeps its store, a new ``model.pt`` does not."""
    digest = hashlib.sha1()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def store_identity(weights: str, cfg: OSTEConfig) -> str:
    """The run's identity in the store: its weights' digest and every setting (a changed recipe weight predicts
    anew)."""
    text = f"{FORMAT_VERSION}|{weights}|{json.dumps(cfg.to_dict(), sort_keys=True, default=str)}"
    return hashlib.sha1(text.encode()).hexdigest()[:12]


def result_key(tags: list[int], mask_ids: tuple, probe_identity: str) -> str:
    """What a photo's suggestion depends on beyond its state: its tags, its masks' hashes, the classifier."""
    return hashlib.sha1(repr((FORMAT_VERSION, tuple(tags), mask_ids, probe_identity)).encode()).hexdigest()[:20]


def _pack(name: str, value: torch.Tensor) -> dict[str, np.ndarray]:
    """One (C, h, w) map for the store: descriptors and logits in int8 with a scale per channel, maps in [0, 1] in
    uint8, the CAMs (shown scaled to each class's peak, negative values as 0) in uint8 of their peak."""
    if name in SIGNED:
        scale = value.flatten(1).abs().amax(dim=1).clamp_min(1e-6)[:, None, None] / 127
        return {f"{name}.int8": torch.round(value / scale).to(torch.int8).numpy(), f"{name}.scale": scale.numpy()}
    if name in SHOWN_MAPS:
        value = value.clamp_min(0)
        value = value / value.flatten(1).amax(dim=1).clamp_min(1e-6)[:, None, None]
    if name in UNIT_MAPS or name in SHOWN_MAPS:
        return {f"{name}.uint8": torch.round(value.clamp(0, 1) * 255).to(torch.uint8).numpy()}
    raise ValueError(f"the suggestion store does not know the map {name!r}")


def _unpack(arrays: dict[str, np.ndarray], device: torch.device) -> dict[str, torch.Tensor]:
    """``_pack``'s arrays as float32 tensors on ``device``, by map name."""
    tensors = {}
    for key, value in arrays.items():
        name, _, kind = key.partition(".")
        if kind == "scale":
            continue
        tensor = torch.from_numpy(value).to(device).float()
        if kind == "int8":
            tensor = tensor * torch.from_numpy(arrays[f"{name}.scale"]).to(device)
        elif kind == "uint8":
            tensor = tensor / 255
        tensors[name] = tensor
    return tensors


def _state(arrays: dict[str, np.ndarray], pixels: torch.Tensor, device: torch.device) -> ImageState:
    """An ``ImageState`` from its stored arrays (float32 on ``device``)."""
    tensors = _unpack(arrays, device)
    compact = tensors.get("compact")
    return ImageState(pixels, {name: tensors[name] for name in MAP_NAMES}, tensors["priors_mixed"],
                      tensors.get("probe_logits"), compact,
                      compact if compact is not None else tensors.get("seed_descriptors"), out=None)


class SuggestionStore:
    """The ``suggestions/`` folder of one run, for the weights and settings named ``identity`` (``store_identity``)."""

    def __init__(self, run_dir: str | Path, identity: str) -> None:
        self.directory = Path(run_dir) / STORE_DIR
        self.identity = identity

    def _file(self, photo_key: str, kind: str) -> Path:
        return self.directory / f"{self.identity}-{photo_key}.{kind}.npz"

    def has_state(self, photo_key: str) -> bool:
        return self._file(photo_key, "state").is_file()

    def load_state(self, photo_key: str, pixels: torch.Tensor, device: torch.device) -> ImageState | None:
        """The photo's stored state (float32 on ``device``) with ``pixels``, or None."""
        arrays = self._load(self._file(photo_key, "state"))
        return None if arrays is None else _state(arrays, pixels, device)

    def save_state(self, photo_key: str, state: ImageState) -> ImageState:
        """Store a state (``storable``); the state as it will be read back (``_pack``'s precision), so that a
        photo's suggestion is the same computed now or after a restart."""
        parts = {**state.maps, "priors_mixed": state.priors_mixed, "probe_logits": state.probe_logits,
                 "compact": state.compact}
        if state.compact is None:
            parts["seed_descriptors"] = state.seed_descriptors
        arrays = {}
        for name, value in parts.items():
            if value is not None:
                arrays.update(_pack(name, value.detach().float().cpu()))
        self._save(self._file(photo_key, "state"), arrays)
        return _state(arrays, state.pixels, state.pixels.device)

    def load_result(self, photo_key: str, key: str) -> dict[str, np.ndarray] | None:
        """The photo's stored suggestion (``suggestion``, ``suggestion_confidence``, ``pseudo_label``) when it
        was made under ``key``, else None."""
        arrays = self._load(self._file(photo_key, "result"))
        if arrays is None or str(arrays.pop("key")) != key:
            return None
        arrays["suggestion_confidence"] = arrays["suggestion_confidence"].astype(np.float32)
        return arrays

    def save_result(self, photo_key: str, key: str, suggestion: np.ndarray, confidence: np.ndarray,
                    pseudo_label: np.ndarray) -> None:
        self._save(self._file(photo_key, "result"), {
            "key": np.array(key), "suggestion": suggestion, "suggestion_confidence": confidence.astype(np.float16),
            "pseudo_label": pseudo_label})

    def prune(self) -> int:
        """Delete the files of other weights or settings (a previous ``model.pt``); their count."""
        removed = 0
        if self.directory.is_dir():
            for file in self.directory.glob("*.npz"):
                if not file.name.startswith(f"{self.identity}-"):
                    file.unlink(missing_ok=True)
                    removed += 1
        return removed

    def _save(self, file: Path, arrays: dict[str, np.ndarray]) -> None:
        buffer = io.BytesIO()
        np.savez_compressed(buffer, **arrays)
        self.directory.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(file, buffer.getvalue())

    @staticmethod
    def _load(file: Path) -> dict[str, np.ndarray] | None:
        if not file.is_file():
            return None
        try:
            with np.load(file, allow_pickle=False) as data:
                return {name: data[name] for name in data.files}
        except Exception as exc:  # noqa: BLE001 - any unreadable file is computed again
            log.warning("%s: unreadable stored suggestion (%s); computing it again", file, exc)
            file.unlink(missing_ok=True)
            return None
