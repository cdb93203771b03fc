"""OSTEModel: backbone + CAM head (Eqs 1-2) + LEM (Eqs 3-5) + MAF (Eqs 6-8) + segmentation head, one step.

One training forward gives everything the losses (Eqs 14-22) and FBE (Eqs 9-13, run by the trainer on
``enhanced_cam``) need. The switches ``use_lem`` / ``use_maf`` build only the modules that are on, so
DDP sees no unused parameters; with LEM, MAF and FBE off this is the paper's two-branch baseline
(classification + segmentation).
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from oste_core.config import ModelConfig

from .backbones import Backbone, build_backbone
from .backbones.conv_bn import reuse_folded_weights
from .modules.cam import CAMHead, multiscale_flip_sum
from .modules.lem import location_expansion, merge_tile_cams
from .modules.maf import MultilevelActivationFusion
from .modules.seg_head import SegHead


class OSTEModel(nn.Module):
    """The OSTE network; see ``forward`` for its outputs."""

    def __init__(self, cfg: ModelConfig, num_classes: int, backbone: Backbone | None = None) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"OSTEModel needs at least one foreground class, got num_classes={num_classes}")
        self.num_classes = num_classes
        self.backbone = backbone if backbone is not None else build_backbone(
            cfg.backbone, cfg.output_stride, cfg.pretrained, cfg.frozen_bn
        )
        feature_channels = self.backbone.stage_channels[-1]
        self.feature_stride = self.backbone.stage_strides[-1]
        self.cam_head = CAMHead(feature_channels, num_classes)
        self.lem_grids = _check_grids(cfg.lem_grids) if cfg.use_lem else ()
        self.maf_stages = _check_stages(cfg.maf_stages, len(self.backbone.stage_channels)) if cfg.use_maf else ()
        self.maf = (
            MultilevelActivationFusion(
                [self.backbone.stage_channels[s - 1] for s in self.maf_stages], cfg.maf_dim, cfg.maf_detach_features,
                power=cfg.maf_power,
            )
            if cfg.use_maf
            else None
        )
        self.seg_head = SegHead(feature_channels, num_classes + 1, cfg.seg_head_dim, self.backbone.output_stride)

    def _classify(self, images: Tensor) -> tuple[Tensor, Tensor]:
        return self.cam_head(self.backbone(images)[-1])

    def forward(self, images: Tensor) -> dict:
        """Training forward of normalised images (B, 3, H, W); h, w = feature size (H / output stride).

        "logits" (B, K); "cam" (B, K, h, w); with LEM "tile_logits" {n: (B*n*n, K)},
        "merged_cams" {n: (B, K, h, w)} and "merged_cam" (B, K, h, w) = their sum (M_merge, Eq 5);
        "enhanced_cam" (B, K, h, w), the map FBE turns into pseudo-labels: MAF's Eq 8 output; with MAF off
        but LEM on, Eq 8 with A = identity, (CAM + mean merged CAM) / 2; with both off, the CAM.
        With MAF also "maf_similarity" (B, N, N), Eq 7's cosine similarity for the affinity loss, on the
        grid "maf_grid" (h', w') (h, w unless above MAF's max_pixels). "seg_logits" (B, K+1, h, w).
        """
        with reuse_folded_weights():  # frozen BN folded once for the image and the LEM tiles
            return self._forward(images)

    def _forward(self, images: Tensor) -> dict:
        stages = self.backbone(images)
        lem = None
        if self.lem_grids:
            lem = location_expansion(images, self._classify, self.lem_grids, tuple(stages[-1].shape[-2:]),
                                     self.feature_stride)
        return self._heads(stages, lem)

    def forward_features(self, stages: list[Tensor | None], tile_features: dict[int, Tensor],
                         image_size: tuple[int, int], classify_only: bool = False) -> dict:
        """``forward``'s outputs from cached features of a frozen backbone (the fast mode).

        ``stages``: the five stage features of the images (entries MAF and the heads do not use may be
        None); ``tile_features`` {n: (B*n*n, C, h', w')}: the last-stage features of the LEM tiles
        (``image_tiles``); ``image_size``: the (H, W) of the images the features were computed from.
        ``classify_only``: only the classification outputs (logits, CAM, LEM), no MAF or segmentation head:
        the fast mode's warm-up, which costs a 1x1 convolution per image.
        """
        lem = None
        if self.lem_grids:
            cam_size = tuple(stages[-1].shape[-2:])
            tile_logits, merged_cams = {}, {}
            for n in self.lem_grids:
                tile_logits[n], tile_cams = self.cam_head(tile_features[n])
                merged_cams[n] = merge_tile_cams(tile_cams, n, image_size, self.feature_stride, cam_size)
            lem = (tile_logits, merged_cams)
        return self._heads(stages, lem, classify_only)

    def _heads(self, stages: list[Tensor | None], lem: tuple[dict, dict] | None, classify_only: bool = False) -> dict:
        """CAM head, LEM merge, MAF and the segmentation head on backbone features (see ``forward``)."""
        logits, cam = self.cam_head(stages[-1])
        out: dict = {"logits": logits, "cam": cam}
        merged: list[Tensor] = []
        if lem is not None:
            tile_logits, merged_cams = lem
            merged = list(merged_cams.values())
            out["tile_logits"] = tile_logits
            out["merged_cams"] = merged_cams
            out["merged_cam"] = torch.stack(merged).sum(dim=0)
        if classify_only:
            return out
        if self.maf is not None:
            out["enhanced_cam"], out["maf_similarity"] = self.maf(
                [stages[s - 1] for s in self.maf_stages], cam, merged
            )
            out["maf_grid"] = self.maf.affinity_grid(tuple(cam.shape[-2:]))
        elif merged:  # Eq 8 without the affinity (A = identity): the LEM merged CAM reaches FBE
            out["enhanced_cam"] = (cam + out["merged_cam"] / len(merged)) / 2
        else:
            out["enhanced_cam"] = cam
        out["seg_logits"] = self.seg_head(stages[-1])
        return out

    def param_groups(self, lr: float, head_lr_mult: float = 10.0) -> list[dict]:
        """Optimizer groups: backbone at ``lr``, all heads at ``lr * head_lr_mult``; frozen params skipped.

        Each group also carries "name" and "lr_mult" (its lr / ``lr``) for learning-rate schedules.
        """
        backbone_ids = {id(p) for p in self.backbone.parameters()}
        backbone_params = [p for p in self.backbone.parameters() if p.requires_grad]
        head_params = [p for p in self.parameters() if p.requires_grad and id(p) not in backbone_ids]
        groups = [
            {"name": "backbone", "params": backbone_params, "lr": lr, "lr_mult": 1.0},
            {"name": "heads", "params": head_params, "lr": lr * head_lr_mult, "lr_mult": head_lr_mult},
        ]
        return [group for group in groups if group["params"]]

    @torch.no_grad()
    def infer_cams(
        self, image: Tensor, scales: Sequence[float] = (0.5, 1.0, 1.5, 2.0), flip: bool = True
    ) -> dict[str, Tensor]:
        """Multi-scale + flip inference (Eq 2) of one normalised image (1, 3, H, W), in eval mode.

        "cam", "merged_cam", "enhanced_cam": (K, H, W) >= 0, summed over scales and flips ("merged_cam"
        is zeros when LEM is off); "seg_logits": (K+1, H, W), the average of the upsampled logits over
        the same scales and flips.
        """
        was_training = self.training
        self.eval()
        try:
            with reuse_folded_weights():
                sums = multiscale_flip_sum(self._inference_maps, image, scales, flip)
        finally:
            self.train(was_training)
        sums["seg_logits"] = sums["seg_logits"] / (len(scales) * (2 if flip else 1))
        return sums

    def _inference_maps(self, images: Tensor) -> dict[str, Tensor]:
        out = self.forward(images)
        maps = {key: out[key] for key in ("cam", "enhanced_cam", "seg_logits")}
        maps["merged_cam"] = out["merged_cam"] if "merged_cam" in out else torch.zeros_like(out["cam"])
        return maps


def _check_grids(grids: Sequence[int]) -> tuple[int, ...]:
    grids = tuple(int(n) for n in grids)
    if any(n < 1 for n in grids) or len(set(grids)) != len(grids):
        raise ValueError(f"model.lem_grids must be distinct positive integers (e.g. 2,4), got {list(grids)}")
    return grids


def _check_stages(stages: Sequence[int], count: int) -> tuple[int, ...]:
    stages = tuple(int(s) for s in stages)
    if not stages or any(s < 1 or s > count for s in stages):
        raise ValueError(f"model.maf_stages must be 1-based backbone stages in 1..{count}, got {list(stages)}")
    return stages
