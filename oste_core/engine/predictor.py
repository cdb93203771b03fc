"""Inference from a trained run: CAMs, FBE pseudo-labels, segmentation and confidence per image.

The segmentation prediction is restricted to the image's tags plus background when tags are
known (an annotation assistant knows them; the paper's test protocol does not, pass ``tags=None``
to predict over all classes). Results are cached per image key (LRU).
"""
from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F

from oste_core.config import OSTEConfig
from oste_core.data import ImageLoadError, LabelledFolder, Sample, load_image
from oste_core.engine.trainer import CHECKPOINT, FINAL_MODEL
from oste_core.models import OSTEModel
from oste_core.models.modules.crf import make_crf
from oste_core.models.modules.fbe import make_pseudo_labels
from oste_core.utils.device import pick_device

log = logging.getLogger(__name__)


class RunError(RuntimeError):
    """A run folder that cannot be loaded; the message names the file and the problem."""


@dataclass
class Prediction:
    cam: np.ndarray  # (K, H, W) float32 in [0, 1], multi-scale original CAM (Eq 2)
    merged_cam: np.ndarray  # (K, H, W) LEM merged CAM (zeros when LEM is off)
    enhanced_cam: np.ndarray  # (K, H, W) MAF enhanced CAM
    pseudo_label: np.ndarray  # (H, W) uint8, 0 background, 1..K classes, 255 unsure
    seg: np.ndarray  # (H, W) uint8 segmentation prediction
    confidence: np.ndarray  # (H, W) float32, softmax max of the segmentation branch
    tags: list[int]  # 1-based class indices used

    @property
    def uncertainty(self) -> float:
        """Share of unsure (255) pixels in the pseudo-label: the review-order key."""
        return float((self.pseudo_label == 255).mean())


def _normalise_per_class(cams: torch.Tensor) -> torch.Tensor:
    peak = cams.flatten(1).amax(dim=1).clamp_min(1e-6)
    return (cams / peak[:, None, None]).clamp(0, 1)


def find_weights(run_dir: Path) -> Path:
    """The final model, or the latest checkpoint of a stopped run."""
    for name in (FINAL_MODEL, CHECKPOINT):
        if (run_dir / name).exists():
            return run_dir / name
    raise RunError(f"{run_dir}: no {FINAL_MODEL} or {CHECKPOINT} (is this a run folder, and did training start?)")


class Predictor:
    """Loads a run and predicts masks for single images or a whole folder."""

    def __init__(self, model: OSTEModel, cfg: OSTEConfig, class_names: list[str], device: torch.device,
                 cache_size: int = 16) -> None:
        self.model = model.eval()
        self.cfg = cfg
        self.class_names = class_names
        self.device = device
        self.crf = make_crf(cfg.model.crf_backend, iters=cfg.model.crf_iters, device=device)
        self.scales = tuple(cfg.model.cam_scales)
        self.max_side = cfg.train.max_side
        self.problems: list[str] = []
        self._cache: OrderedDict[str, Prediction] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()

    @classmethod
    def from_run(cls, run_dir: str | Path, device: str = "auto") -> "Predictor":
        run_dir = Path(run_dir)
        weights = find_weights(run_dir)
        try:
            state = torch.load(weights, map_location="cpu", weights_only=False)
            ignored: list[str] = []
            cfg = OSTEConfig.from_dict(state["config"], ignored=ignored)
            class_names = list(state["class_names"])
        except Exception as exc:  # noqa: BLE001 - one clear message for any unreadable file
            raise RunError(f"{weights}: cannot read this model file ({exc})") from exc
        if ignored:
            log.warning("%s: ignoring settings this version does not know: %s", weights, ", ".join(ignored))
        torch_device = pick_device(device)
        cfg.model.pretrained = "none"  # the weights come from the run, not from ImageNet
        model = OSTEModel(cfg.model, num_classes=len(class_names))
        try:
            model.load_state_dict(state["model"])
        except RuntimeError as exc:
            raise RunError(f"{weights}: weights do not match the saved config ({exc})") from exc
        return cls(model.to(torch_device), cfg, class_names, torch_device)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def clear_cache(self) -> None:
        with self._lock:
            self._cache.clear()

    @torch.no_grad()
    def predict(self, image: np.ndarray, tags: list[int] | None, key: str | None = None) -> Prediction:
        """Predict one (H, W, 3) uint8 RGB image; ``tags`` are 1-based class indices (None = unknown)."""
        with self._lock:
            if key is not None and key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
            prediction = self._predict(image, tags)
            if key is not None:
                self._cache[key] = prediction
                while len(self._cache) > self._cache_size:
                    self._cache.popitem(last=False)
            return prediction

    def _predict(self, image: np.ndarray, tags: list[int] | None) -> Prediction:
        backbone = self.model.backbone
        pixels = torch.from_numpy(np.array(image, dtype=np.uint8, copy=True)).permute(2, 0, 1)[None].to(self.device)
        mean = torch.tensor(backbone.input_mean, device=self.device).view(1, 3, 1, 1)
        std = torch.tensor(backbone.input_std, device=self.device).view(1, 3, 1, 1)
        x = (pixels.float() / 255.0 - mean) / std
        out = self.model.infer_cams(x, scales=self.scales, flip=True)
        seg_logits = out["seg_logits"].float()
        if tags is None:  # unknown tags: take the classes the segmentation branch finds
            seg_all = seg_logits.argmax(0)
            tags = [k for k in range(1, self.num_classes + 1) if (seg_all == k).float().mean() > 0.01]
        allowed = torch.zeros(self.num_classes + 1, dtype=torch.bool, device=self.device)
        allowed[0] = True
        allowed[list(tags)] = True
        seg_logits = seg_logits.masked_fill(~allowed[:, None, None], float("-inf"))
        probs = F.softmax(seg_logits, dim=0)
        confidence, seg = probs.max(dim=0)
        multi_hot = torch.zeros(1, self.num_classes, device=self.device)
        if tags:
            multi_hot[0, [k - 1 for k in tags]] = 1.0
        pseudo = make_pseudo_labels(out["enhanced_cam"][None].float(), pixels, multi_hot, self.cfg.model, self.crf)[0]
        as_np = lambda t: _normalise_per_class(t.float()).cpu().numpy().astype(np.float32)  # noqa: E731
        return Prediction(
            cam=as_np(out["cam"]), merged_cam=as_np(out["merged_cam"]), enhanced_cam=as_np(out["enhanced_cam"]),
            pseudo_label=pseudo.to(torch.uint8).cpu().numpy(), seg=seg.to(torch.uint8).cpu().numpy(),
            confidence=confidence.cpu().numpy().astype(np.float32), tags=list(tags),
        )

    def predict_sample(self, folder: LabelledFolder, sample: Sample) -> Prediction:
        """Load one sample of a folder (downscaled to the run's max side) and predict it, cached by its stem."""
        image = load_image(sample.image_path, max_side=self.max_side)
        return self.predict(image, folder.tag_indices(sample), key=sample.stem)

    def predict_folder(
        self,
        folder: LabelledFolder,
        on_progress: Callable[[int, int], None] | None = None,
        cancel: Callable[[], bool] | None = None,
    ) -> Iterator[tuple[Sample, Prediction]]:
        """Predict every sample; unreadable images are skipped and recorded in ``problems``."""
        total = len(folder.samples)
        for done, sample in enumerate(folder.samples, start=1):
            if cancel is not None and cancel():
                return
            try:
                prediction = self.predict_sample(folder, sample)
            except ImageLoadError as exc:
                self.problems.append(str(exc))
            else:
                yield sample, prediction
            if on_progress is not None:
                on_progress(done, total)
