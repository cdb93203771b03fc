"""OSTEModel on the real EfficientNet-Lite0 backbone (bundled ImageNet weights, tiny inputs)."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from oste_core.config import LossConfig, ModelConfig
from oste_core.losses import LOSS_KEYS, compute_losses
from oste_core.models import OSTEModel, build_backbone

NUM_CLASSES = 3


@pytest.fixture(scope="module")
def backbone_state() -> dict[str, torch.Tensor]:
    """The pretrained backbone weights, loaded once; each model gets a fresh copy."""
    cfg = ModelConfig()
    return build_backbone(cfg.backbone, cfg.output_stride, cfg.pretrained, cfg.frozen_bn).state_dict()


def _model(backbone_state: dict[str, torch.Tensor], **switches) -> OSTEModel:
    cfg = dataclasses.replace(ModelConfig(), **switches)
    backbone = build_backbone(cfg.backbone, cfg.output_stride, pretrained="none", frozen_bn=cfg.frozen_bn)
    backbone.load_state_dict(backbone_state)
    torch.manual_seed(0)
    return OSTEModel(cfg, NUM_CLASSES, backbone=backbone)


def _batch(size: int = 64) -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    pixels = torch.randint(0, 256, (2, 3, size, size), dtype=torch.uint8, generator=generator)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    images = (pixels.float() / 255 - mean) / std
    valid = torch.ones(2, size, size, dtype=torch.bool)
    valid[1, :, size - 8:] = False  # padding on the right of the second image
    batch = {"tags": torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]]), "image_uint8": pixels, "valid": valid}
    pseudo = torch.randint(0, NUM_CLASSES + 1, (2, size, size), generator=generator)
    pseudo[:, : size // 4] = 255
    return images, batch, pseudo


def test_default_model_builds_the_efficientnet_backbone_from_its_config() -> None:
    model = OSTEModel(ModelConfig(), NUM_CLASSES)
    assert model.backbone.name == "efficientnet_lite0"
    assert model.num_classes == NUM_CLASSES
    assert model.lem_grids == (2, 4) and model.maf_stages == (3, 4, 5)


@pytest.mark.parametrize(
    "switches",
    [{}, {"use_lem": False}, {"use_maf": False}, {"use_lem": False, "use_maf": False}, {"lem_grids": ()}],
    ids=["all-on", "no-lem", "no-maf", "baseline", "empty-grids"],
)
def test_forward_keys_and_shapes_follow_the_switches(backbone_state, switches: dict) -> None:
    model = _model(backbone_state, **switches)
    images = _batch(32)[0]
    with torch.no_grad():
        out = model(images)
    lem_on = switches.get("use_lem", True) and switches.get("lem_grids", (2, 4))
    maf_on = switches.get("use_maf", True)
    expected = {"logits", "cam", "enhanced_cam", "seg_logits"}
    if lem_on:
        expected |= {"tile_logits", "merged_cams", "merged_cam"}
    if maf_on:
        expected |= {"maf_similarity", "maf_grid"}
        assert out["maf_grid"] == (4, 4) and out["maf_similarity"].shape == (2, 16, 16)
    assert set(out) == expected
    assert out["logits"].shape == (2, NUM_CLASSES)
    assert out["cam"].shape == (2, NUM_CLASSES, 4, 4) and (out["cam"] >= 0).all()
    assert out["enhanced_cam"].shape == (2, NUM_CLASSES, 4, 4) and (out["enhanced_cam"] >= 0).all()
    assert out["seg_logits"].shape == (2, NUM_CLASSES + 1, 4, 4)
    assert (out["enhanced_cam"] is out["cam"]) == (not maf_on and not lem_on)
    if lem_on and not maf_on:  # Eq 8 with A = identity: FBE sees the LEM merged CAM
        mean_merged = torch.stack(list(out["merged_cams"].values())).mean(dim=0)
        assert torch.allclose(out["enhanced_cam"], (out["cam"] + mean_merged) / 2)
    assert (model.maf is None) == (not maf_on)  # modules that are off are not built (DDP: no unused params)
    if lem_on:
        assert {n: tuple(t.shape) for n, t in out["tile_logits"].items()} == {2: (8, 3), 4: (32, 3)}
        assert all(m.shape == out["cam"].shape for m in out["merged_cams"].values())
        assert torch.allclose(out["merged_cam"], out["merged_cams"][2] + out["merged_cams"][4])


def test_full_training_step_reaches_every_module_with_finite_gradients(backbone_state) -> None:
    model = _model(backbone_state)
    model.train()
    images, batch, pseudo = _batch(64)
    out = model(images)
    losses = compute_losses(out, batch, pseudo, LossConfig(), iteration=0)
    assert tuple(losses) == LOSS_KEYS
    assert all(torch.isfinite(value) and value.dim() == 0 for value in losses.values())
    assert all(losses[key] > 0 for key in ("cls", "tile", "mae", "affinity", "seg"))
    losses["total"].backward()
    grads = {name: p.grad for name, p in model.named_parameters() if p.requires_grad}
    assert all(g is not None and torch.isfinite(g).all() for g in grads.values()), "a trainable parameter got no grad"
    for name in ("backbone._conv_stem.weight", "cam_head.classifier.weight", "maf.theta.weight", "maf.phi.weight",
                 "maf.projections.0.0.weight", "seg_head.classifier.weight"):
        assert grads[name].abs().sum() > 0, name


def test_channels_last_gives_the_same_outputs(backbone_state) -> None:
    model = _model(backbone_state).eval()
    images = _batch(32)[0]
    with torch.no_grad():
        plain = model(images)
        model.to(memory_format=torch.channels_last)
        last = model(images.contiguous(memory_format=torch.channels_last))
    for key in ("logits", "cam", "merged_cam", "enhanced_cam", "seg_logits"):
        assert torch.allclose(plain[key], last[key], atol=1e-4, rtol=1e-4), key


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_bf16_autocast_channels_last_training_step(backbone_state) -> None:
    device = torch.device("cuda")
    model = _model(backbone_state).to(device).to(memory_format=torch.channels_last)
    images, batch, pseudo = _batch(96)
    batch = {key: value.to(device) for key, value in batch.items()}
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out = model(images.to(device).contiguous(memory_format=torch.channels_last))
        losses = compute_losses(out, batch, pseudo.to(device), LossConfig(), iteration=0)
    assert out["enhanced_cam"].dtype == torch.float32
    assert all(value.dtype == torch.float32 and torch.isfinite(value) for value in losses.values())
    losses["total"].backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert model.maf.theta.weight.grad.abs().sum() > 0


def test_infer_cams_gives_input_sized_non_negative_maps(backbone_state) -> None:
    model = _model(backbone_state)
    model.train()
    image = _batch(32)[0][:1, :, :, :24]
    out = model.infer_cams(image, scales=(0.5, 1.0), flip=True)
    assert set(out) == {"cam", "merged_cam", "enhanced_cam", "seg_logits"}
    for key in ("cam", "merged_cam", "enhanced_cam"):
        assert out[key].shape == (NUM_CLASSES, 32, 24)
        assert (out[key] >= 0).all() and out[key].dtype == torch.float32
    assert out["seg_logits"].shape == (NUM_CLASSES + 1, 32, 24)
    assert model.training  # restored after the eval-mode inference


def test_infer_cams_flip_of_a_mirror_symmetric_image_is_symmetric(backbone_state) -> None:
    model = _model(backbone_state, use_lem=False)
    half = _batch(32)[0][:1, :, :, :16]
    image = torch.cat([half, half.flip(-1)], dim=-1)
    out = model.infer_cams(image, scales=(1.0,), flip=True)
    assert torch.allclose(out["cam"], out["cam"].flip(-1), atol=1e-4)
    assert out["merged_cam"].eq(0).all()  # LEM off: no merged CAM


def test_param_groups_put_heads_at_the_multiplied_rate_and_skip_frozen_params(backbone_state) -> None:
    model = _model(backbone_state)
    groups = model.param_groups(lr=0.01, head_lr_mult=10.0)
    by_name = {group["name"]: group for group in groups}
    assert by_name["backbone"]["lr"] == pytest.approx(0.01)
    assert by_name["heads"]["lr"] == pytest.approx(0.1)
    grouped = [id(p) for group in groups for p in group["params"]]
    trainable = [id(p) for p in model.parameters() if p.requires_grad]
    assert sorted(grouped) == sorted(trainable) and len(set(grouped)) == len(grouped)
    backbone_ids = {id(p) for p in model.backbone.parameters()}
    assert all(id(p) in backbone_ids for p in by_name["backbone"]["params"])
    head_ids = {id(p) for p in by_name["heads"]["params"]}
    assert {id(model.maf.theta.weight), id(model.seg_head.classifier.weight)} <= head_ids
    frozen_bn = [p for p in model.backbone.parameters() if not p.requires_grad]
    assert frozen_bn and not {id(p) for p in frozen_bn} & set(grouped)
    torch.optim.SGD(groups, lr=0.01, momentum=0.9)  # accepted by a real optimizer


@pytest.mark.parametrize(
    ("switches", "message"),
    [({"maf_stages": (3, 6)}, "maf_stages"), ({"lem_grids": (2, 0)}, "lem_grids")],
)
def test_bad_module_settings_are_reported_clearly(backbone_state, switches: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _model(backbone_state, **switches)
