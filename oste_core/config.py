"""Typed configuration: the defaults follow the OSTE paper except where ``docs/PAPER_VS_DEFAULTS.md``
says otherwise (with the measured reason); everything can be overridden.

`OSTEConfig` is saved next to each run (`config.yaml`) and reloaded by `Predictor` and `--resume`.
Overrides use dotted keys, e.g. ``model.alpha=0.7`` or ``train.iters=500`` (`apply_overrides`).
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

YAML_HEADER = "# OSTE Studio settings (the file ends with the line '# end')"
YAML_TRAILER = "# end"  # a saved YAML config without it was cut short


@dataclass
class ModelConfig:
    """The OSTE network and its three enhancement modules (paper settings unless docs/PAPER_VS_DEFAULTS.md differs)."""

    backbone: str = "efficientnet_lite0"
    pretrained: str = "auto"  # "auto" (bundled / cached ImageNet weights), a file path, or "none"
    output_stride: int = 8
    frozen_bn: bool = True
    cam_scales: tuple[float, ...] = (0.5, 1.0, 1.5, 2.0)  # Eq 2, inference only
    use_lem: bool = True
    lem_grids: tuple[int, ...] = (2, 4)  # Eqs 3-5
    use_maf: bool = True
    maf_stages: tuple[int, ...] = (3, 4, 5)  # Eqs 6-8, 1-based stage indices
    maf_dim: int = 64
    maf_detach_features: bool = True
    maf_power: float = 8.0  # affinity ** power before row normalisation (PSA's beta = 8; 1 = plain Eq 7)
    use_fbe: bool = True
    gamma: float = 4.0  # Eq 10
    alpha: float = 0.8  # Eq 12
    baseline_threshold: float = 0.3  # pseudo-labels when FBE is off: plain CAM thresholding
    crf_backend: str = "auto"  # "pydensecrf", "torch", or "auto"
    crf_iters: int = 10
    seg_head_dim: int = 128
    suggestion_seg_weight: float = 0.5  # full-mask suggestion: seg probabilities vs FBE scores (suggest/recipe.py)
    suggestion_gamma: float = 2.0  # the suggestion's background power (Eq 10's gamma; FBE's seeds keep `gamma`)
    suggestion_crf_sxy: float = 0.125  # the suggestion CRF's bilateral width, a fraction of the longest side
    suggestion_crf_srgb: float = 8.0  # the suggestion CRF's colour width (FBE's Eq 11 CRF keeps psa's 80 px / 13)
    colocalisation_weight: float = 0.7  # fast mode: share of the DDT objectness in the suggestion (colocalisation.py)
    pixel_probe_weight: float = 0.5  # fast mode: share of the folder pixel classifier in the suggestion (pixel_probe.py)
    imagenet_prior_weight: float = 0.5  # fast mode: share of the ImageNet class prior in the suggestion (imagenet_prior.py)
    suggestion_maf_weight: float = 0.0  # fast mode with MAF: share of A . maps in the suggestion's maps; 0 = off (maf_refinement.py)


@dataclass
class LossConfig:
    """Weights of Eq 22 and the energy-loss kernel (Eqs 18-21)."""

    w_cls: float = 1.0  # Eq 14
    w_tile: float = 1.0  # Eq 15
    w_mae: float = 1.0  # Eq 16
    w_affinity: float = 1.0  # MAF's affinity from the pseudo-labels (losses/affinity.py; not in the paper)
    w_seg: float = 1.0  # Eq 17
    w_energy: float = 0.5  # Eqs 18-21
    sigma_rgb: float = 15.0
    sigma_xy: float = 100.0
    energy_scale: float = 0.25  # the energy loss runs on a grid downscaled by this factor
    energy_chunk: int = 4096
    seg_warmup_iters: int = 0  # iterations before the segmentation losses switch on


@dataclass
class TrainConfig:
    """Optimisation and augmentation (paper: crop 321, batch 2, 10 000 iterations; lr: docs/PAPER_VS_DEFAULTS.md)."""

    iters: int = 10000
    batch: int = 2
    crop: int = 321
    scale_range: tuple[float, float] = (0.5, 1.5)
    hflip: bool = True
    optimizer: str = "sgd"  # "sgd" or "adamw"
    lr: float = 0.001  # the paper gives none; 0.01 made EfficientNet-Lite0 collapse to all-background CAMs
    momentum: float = 0.9
    weight_decay: float = 5e-4
    poly_power: float = 0.9
    head_lr_mult: float = 10.0
    grad_clip: float = 10.0
    amp: bool = True  # bf16 autocast where supported (CUDA only)
    channels_last: bool = True  # CUDA only
    device: str = "auto"
    seed: int = 0
    freeze_backbone: bool = False  # the fast mode: ImageNet backbone frozen, heads trained on cached features
    fast_max_side: int = 320  # fast mode: longest side of the images the cached features are computed at
    # fast mode: predictions (CAMs, pseudo-labels, the suggestion) are made on the working-size image enlarged by
    # this factor (features cached in features/x<scale>/): the classifier trained at the working size localises
    # better there, for about three times the prediction time (docs/BENCHMARKS.md)
    fast_predict_scale: float = 1.5
    # fast mode: cap on <run>/features/ in MB; past it the least recently used files are deleted (prediction-scale
    # ones first) and recomputed when needed. 0 = 4 MB per image of the folder (feature_cache.py), < 0 = no cap
    feature_cache_mb: float = 0.0
    update_lr_mult: float = 0.5  # `oste update`: constant lr = lr * this (the run's schedule has ended)
    workers: int = 4  # data-loader processes (the fast mode uses 0: the training step needs the cores)
    crf_workers: int = 0  # >0: a process pool for the pydensecrf backend
    max_side: int = 1024  # images are downscaled on load to this longest side
    checkpoint_every: int = 500
    log_every: int = 10  # progress also comes at least every PROGRESS_EVERY_S seconds (trainer.py)


@dataclass
class OSTEConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], ignored: list[str] | None = None) -> "OSTEConfig":
        """Config from nested dicts. Unknown keys raise, unless ``ignored`` is given: then they are
        skipped and their names appended to it (a run saved by another version of OSTE Studio)."""
        cfg = cls()
        for section, values in (data or {}).items():
            for key, value in (values or {}).items():
                try:
                    _set(cfg, f"{section}.{key}", value)
                except KeyError:  # an unknown section or key; bad values still raise ValueError
                    if ignored is None:
                        raise
                    ignored.append(f"{section}.{key}")
        return cfg

    def save(self, path: str | Path) -> Path:
        """Write as YAML (``.yaml``/``.yml``) or JSON (anything else), atomically."""
        from oste_core.utils.io import atomic_write_text

        path = Path(path)
        data = self.to_dict()
        if path.suffix in (".yaml", ".yml"):  # framed, so that a cut-short file is recognised (`load`)
            text = f"{YAML_HEADER}\n{yaml.safe_dump(_plain(data), sort_keys=False)}{YAML_TRAILER}\n"
        else:
            text = json.dumps(_plain(data), indent=2)
        atomic_write_text(path, text)
        return path

    @classmethod
    def load(cls, path: str | Path) -> "OSTEConfig":
        path = Path(path)
        text = path.read_text(encoding="utf-8")
        if text.startswith(YAML_HEADER) and not text.rstrip().endswith(YAML_TRAILER):
            raise ValueError(f"{path}: incomplete (the last line, {YAML_TRAILER!r}, is missing)")
        data = yaml.safe_load(text) if path.suffix in (".yaml", ".yml") else json.loads(text)
        if not isinstance(data, dict):
            raise ValueError(f"{path}: empty, or not a mapping of settings")
        return cls.from_dict(data)


FAST_PRESET: dict[str, Any] = {
    # the fast mode, the default on every device: frozen ImageNet backbone, features cached once per image; 300
    # cheap classifier-only warm-up iterations, then 60 with FBE pseudo-labels, MAF, the segmentation head and the
    # energy loss (on a 1/8 grid); AdamW on the heads. LEM without Eq 16: on frozen features only the 1x1 CAM
    # classifier can move, and Eq 16 made its CAM worse. The suggestion takes the enhanced CAM with the class
    # priors and the CRF, not the segmentation branch (docs/BENCHMARKS.md, docs/EXPERIMENTS.md).
    "train.freeze_backbone": True, "model.use_lem": True, "loss.w_mae": 0.0, "train.iters": 360,
    "loss.seg_warmup_iters": 300, "train.batch": 8,
    "train.optimizer": "adamw", "train.lr": 1e-4, "loss.energy_scale": 0.125, "model.suggestion_seg_weight": 0.0,
    "train.crop": 128, "train.workers": 0, "model.cam_scales": (1.0,), "train.log_every": 1,
}

# full fine-tuning sized for a CPU (the paper's schedule on a GPU): every backbone weight trained, SGD, every
# module on with Eq 16, the segmentation losses from the first iteration
FULL_CPU_PRESET: dict[str, Any] = {
    "train.iters": 300, "train.batch": 8, "train.crop": 128, "train.workers": 0, "loss.energy_scale": 0.25,
    "model.cam_scales": (1.0,), "train.log_every": 1,
}

TRAINING_MODES = ("fast", "full", "paper")  # default_config's modes, `oste train --full / --paper`, the GUI's Mode


# the paper's ablation (its Table 3): which modules each row switches on (benchmarks/bench_quality.py, bench_real.py)
ABLATION_VARIANTS: dict[str, dict[str, bool]] = {
    "baseline": {"model.use_lem": False, "model.use_maf": False, "model.use_fbe": False},
    "+LEM": {"model.use_lem": True, "model.use_maf": False, "model.use_fbe": False},
    "+MAF": {"model.use_lem": False, "model.use_maf": True, "model.use_fbe": False},
    "+FBE": {"model.use_lem": False, "model.use_maf": False, "model.use_fbe": True},
    "all": {"model.use_lem": True, "model.use_maf": True, "model.use_fbe": True},
}


def default_config(device_type: str = "cpu", mode: str = "fast") -> OSTEConfig:
    """The defaults for a device and a training mode (``TRAINING_MODES``): "fast" (every device: `FAST_PRESET`),
    "full" (full fine-tuning: the paper's schedule on a GPU, `FULL_CPU_PRESET` on a CPU) or "paper" (the
    paper's settings on any device; days on a CPU). See docs/PAPER_VS_DEFAULTS.md."""
    if mode not in TRAINING_MODES:
        raise ValueError(f"unknown training mode {mode!r}: one of {', '.join(TRAINING_MODES)}")
    cfg = OSTEConfig()
    if mode == "fast":
        apply_overrides(cfg, FAST_PRESET)
    elif mode == "full" and device_type == "cpu":
        apply_overrides(cfg, FULL_CPU_PRESET)
    return cfg


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _coerce(value: Any, annotation: str, current: Any) -> Any:
    """Convert a parsed value (YAML scalar/list) to the type of the field."""
    if isinstance(current, bool):
        if isinstance(value, str):
            low = value.strip().lower()
            if low not in ("true", "false", "1", "0", "yes", "no", "on", "off"):
                raise ValueError(f"expected a boolean, got {value!r}")
            return low in ("true", "1", "yes", "on")
        return bool(value)
    if isinstance(current, tuple):
        if isinstance(value, str):
            value = yaml.safe_load(f"[{value.strip('[]()')}]") if value.strip("[]() ") else []
        if not isinstance(value, (list, tuple)):
            value = [value]
        item_type = float if "float" in annotation else int
        return tuple(item_type(v) for v in value)
    if isinstance(current, float):
        return float(value)
    if isinstance(current, int):
        return int(float(value)) if isinstance(value, str) else int(value)
    return str(value)


def _set(cfg: OSTEConfig, dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    if len(parts) != 2:
        raise KeyError(f"config key must look like 'section.name', got {dotted!r}")
    section_name, key = parts
    section = getattr(cfg, section_name, None)
    if section is None or not dataclasses.is_dataclass(section):
        raise KeyError(f"unknown config section {section_name!r} (model, loss, train)")
    known = {f.name: f for f in fields(section)}
    if key not in known:
        raise KeyError(f"unknown config key {dotted!r}; known: {', '.join(sorted(known))}")
    current = getattr(section, key)
    try:
        setattr(section, key, _coerce(value, str(known[key].type), current))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"bad value for {dotted}: {value!r} ({exc})") from None


def apply_overrides(cfg: OSTEConfig, overrides: list[str] | dict[str, Any]) -> OSTEConfig:
    """Apply ``key=value`` strings (CLI ``--set``) or a ``{key: value}`` dict in place."""
    items = overrides.items() if isinstance(overrides, dict) else (_split(o) for o in overrides)
    for key, value in items:
        _set(cfg, key, value)  # _coerce parses strings into the field's type
    return cfg


def _split(item: str) -> tuple[str, str]:
    if "=" not in item:
        raise ValueError(f"override must be key=value, got {item!r}")
    key, value = item.split("=", 1)
    return key.strip(), value.strip()
