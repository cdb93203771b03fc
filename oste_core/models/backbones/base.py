"""Common backbone contract: five stage features, dilation-controlled output stride, frozen BN, weight loading."""
from __future__ import annotations

from pathlib import Path
from typing import Mapping

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

NO_WEIGHTS_HINT = "or pass model.pretrained=none for random initialisation (much worse masks)"


class PretrainedWeightsError(RuntimeError):
    """ImageNet weights were requested but cannot be found or do not fit; the message says how to fix it."""


class Backbone(nn.Module):
    """Feature extractor returning the features of all five stages (stage 1..5, the last one feeds the CAM).

    Subclasses set ``name``, ``stage_channels``, ``stage_strides`` and, if their weights expect another
    normalisation than ImageNet's, ``input_mean`` / ``input_std`` (RGB, images scaled to 0..1).
    """

    name: str = "backbone"
    input_mean: tuple[float, float, float] = IMAGENET_MEAN
    input_std: tuple[float, float, float] = IMAGENET_STD
    supported_output_strides: tuple[int, ...] = (8, 16)
    # top-level module names whose keys in a weights file are skipped (ImageNet classifiers)
    ignored_weight_modules: tuple[str, ...] = ()

    def __init__(self, output_stride: int) -> None:
        super().__init__()
        if output_stride not in self.supported_output_strides:
            raise ValueError(
                f"{self.name}: output_stride must be one of {list(self.supported_output_strides)}, got {output_stride}"
            )
        self.output_stride = output_stride
        self.stage_channels: list[int] = []
        self.stage_strides: list[int] = []
        self.frozen_bn = False
        # (weight (1000, C), bias) of the ImageNet classifier on the last stage, kept when pretrained weights load
        self.imagenet_classifier: tuple[Tensor, Tensor] | None = None

    def normalise(self, pixels: Tensor) -> Tensor:
        """(B, 3, H, W) uint8 RGB -> the float input these weights expect (``input_mean`` / ``input_std``)."""
        mean = torch.tensor(self.input_mean, device=pixels.device).view(1, 3, 1, 1)
        std = torch.tensor(self.input_std, device=pixels.device).view(1, 3, 1, 1)
        return (pixels.float() / 255.0 - mean) / std

    def forward(self, x: Tensor) -> list[Tensor]:  # pragma: no cover - abstract
        raise NotImplementedError

    def batch_norms(self) -> list[_BatchNorm]:
        """All batch-norm layers of the backbone."""
        return [module for module in self.modules() if isinstance(module, _BatchNorm)]

    def set_frozen_bn(self, frozen: bool) -> None:
        """Keep BN layers in eval mode (running stats fixed) and their affine parameters out of training."""
        self.frozen_bn = frozen
        for bn in self.batch_norms():
            for param in (bn.weight, bn.bias):
                if param is not None:
                    param.requires_grad_(not frozen)
        self.train(self.training)

    def train(self, mode: bool = True) -> "Backbone":
        """Like ``nn.Module.train``, but frozen BN layers stay in eval mode."""
        super().train(mode)
        if self.frozen_bn:
            for bn in self.batch_norms():
                bn.eval()
        return self

    def load_weights(self, path: str | Path) -> None:
        """Load a local state-dict file; every backbone key must be present with the right shape."""
        load_matching_state_dict(self, read_state_dict(path), source=str(path))


def resolve_pretrained(pretrained: str | Path | None) -> str | Path | None:
    """Normalise the ``pretrained`` setting to "auto", an existing file path, or None (random init)."""
    if pretrained is None:
        return None
    text = str(pretrained).strip()
    if text.lower() in ("", "none"):
        return None
    if text.lower() == "auto":
        return "auto"
    path = Path(text).expanduser()
    if not path.is_file():
        raise PretrainedWeightsError(
            f"{path}: pretrained weights file not found; give an existing state-dict file, "
            f"model.pretrained=auto for the default ImageNet weights, {NO_WEIGHTS_HINT}"
        )
    return path


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """Read a torch state dict (optionally wrapped in {"state_dict": ...}) and strip a DataParallel "module." prefix."""
    path = Path(path)
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several unrelated types for a bad file
        raise PretrainedWeightsError(f"{path}: cannot be read as a PyTorch state dict ({error})") from error
    if isinstance(loaded, dict) and isinstance(loaded.get("state_dict"), dict):
        loaded = loaded["state_dict"]
    if not isinstance(loaded, dict) or not all(isinstance(value, Tensor) for value in loaded.values()):
        raise PretrainedWeightsError(f"{path}: is not a state dict (a mapping of parameter names to tensors)")
    return {key.removeprefix("module."): value for key, value in loaded.items()}


def load_matching_state_dict(backbone: Backbone, state: Mapping[str, Tensor], source: str) -> None:
    """Load ``state`` strictly on the backbone's keys.

    Keys of ``backbone.ignored_weight_modules`` (classifiers) are skipped; missing ``num_batches_tracked``
    buffers (absent from converted files) are tolerated. Anything else that does not fit raises
    ``PretrainedWeightsError`` naming ``source`` and example keys.
    """
    expected = backbone.state_dict()
    kept = {key: value for key, value in state.items() if key.split(".")[0] not in backbone.ignored_weight_modules}
    missing = [key for key in expected if key not in kept and not key.endswith("num_batches_tracked")]
    unexpected = [key for key in kept if key not in expected]
    wrong_shape = [
        f"{key} {tuple(value.shape)} != {tuple(expected[key].shape)}"
        for key, value in kept.items()
        if key in expected and value.shape != expected[key].shape
    ]
    problems = []
    for label, keys in (("missing keys", missing), ("unexpected keys", unexpected), ("wrong shapes", wrong_shape)):
        if keys:
            problems.append(f"{len(keys)} {label} (e.g. {', '.join(keys[:3])})")
    if problems:
        raise PretrainedWeightsError(
            f"{source}: these weights do not fit backbone {backbone.name}: {'; '.join(problems)}. "
            f"Use the weights file made for {backbone.name}, {NO_WEIGHTS_HINT}"
        )
    backbone.load_state_dict(kept, strict=False)
    backbone.imagenet_classifier = _last_stage_classifier(backbone, state)


def _last_stage_classifier(backbone: Backbone, state: Mapping[str, Tensor]) -> tuple[Tensor, Tensor] | None:
    """The skipped 1000-way (ImageNet) linear classifier of ``state`` on the last stage's channels, if there is one."""
    for module in backbone.ignored_weight_modules:
        weight, bias = state.get(f"{module}.weight"), state.get(f"{module}.bias")
        if weight is None or bias is None:
            continue
        weight = weight.flatten(1) if weight.dim() == 4 and weight.shape[-2:] == (1, 1) else weight
        if weight.shape == (1000, backbone.stage_channels[-1]) and bias.shape == (1000,):
            return weight.detach().float().clone(), bias.detach().float().clone()
    return None
