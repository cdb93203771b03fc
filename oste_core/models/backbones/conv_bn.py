"""Conv + BN with an eval-mode BN folded into the convolution (frozen BN while training; all inference).

An eval-mode BN is the per-channel affine map BN(z) = s * z + t, with s = gamma / sqrt(var + eps) and
t = beta - mu * s, so BN(conv(x, W)) = conv(x, s * W) + t: the same values and gradients (W's gradient is
scaled by s, as through the BN) without the BN's passes over the activations, forward and backward.

A stride-1 "same" convolution whose dilated taps reach past a small input (LEM's tiles at small crops: a
5x5 kernel at dilation 4 on a 4x4 map) only ever multiplies zero padding with its outer taps; `same_conv`
leaves them out, with the same result, at a fraction of the cost (a depthwise conv left with its centre
tap alone becomes a per-channel scale).

Two caches keep the folding from adding small kernels: (s, t) is kept on the BN until its statistics or
(frozen) affine parameters change, and inside `reuse_folded_weights` each conv's s * W (cast to the
autocast dtype) is made once for all passes; OSTE runs the backbone on the image and on LEM's tiles.
"""
from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

_folded_weights: ContextVar[dict[nn.Conv2d, tuple[Tensor, Tensor]] | None] = ContextVar("folded_weights", default=None)


@contextmanager
def reuse_folded_weights() -> Iterator[None]:
    """Within this block `conv_bn` folds each conv + eval BN once and reuses it (re-entrant)."""
    if _folded_weights.get() is not None:
        yield
        return
    token = _folded_weights.set({})
    try:
        yield
    finally:
        _folded_weights.reset(token)


def conv_bn(conv: nn.Conv2d, bn: _BatchNorm, x: Tensor) -> Tensor:
    """``bn(conv(x))``, with the BN folded into the conv when it is in eval mode.

    ``conv._conv_forward`` is the hook ``nn.Conv2d`` subclasses override (e.g. for "SAME" padding), so
    such convolutions fold too.
    """
    if bn.training or not bn.track_running_stats or conv.bias is not None:
        return bn(same_conv(conv, x, conv.weight, conv.bias))
    cache = _folded_weights.get()
    folded = cache.get(conv) if cache is not None else None
    if folded is None:
        scale, shift = eval_bn_affine(bn)
        weight = conv.weight * scale.view(-1, 1, 1, 1)
        device_type = x.device.type
        if torch.is_autocast_enabled(device_type):  # cast once here, not in every pass
            dtype = torch.get_autocast_dtype(device_type)
            weight, shift = weight.to(dtype), shift.to(dtype)
        folded = (weight, shift)
        if cache is not None:
            cache[conv] = folded
    return same_conv(conv, x, *folded)


def same_conv(conv: nn.Conv2d, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """``conv`` with ``weight`` and ``bias``; a stride-1 "same"-padded conv skips the taps that lie entirely in
    the padding of ``x`` (exact: they only multiply zeros). Other convolutions run ``conv._conv_forward``."""
    kernel, dilation, padding = conv.kernel_size, conv.dilation, conv.padding
    if conv.stride != (1, 1) or conv.padding_mode != "zeros" or isinstance(padding, str) or any(
        k % 2 == 0 or p != d * (k // 2) for k, d, p in zip(kernel, dilation, padding)
    ):
        return conv._conv_forward(x, weight, bias)
    # taps j with |j - k // 2| * d >= size never reach the input from any output pixel
    reach = [min(k // 2, (size - 1) // d) for k, d, size in zip(kernel, dilation, x.shape[-2:])]
    if reach == [k // 2 for k in kernel]:
        return conv._conv_forward(x, weight, bias)
    (kh, kw), (rh, rw) = kernel, reach
    weight = weight[..., kh // 2 - rh:kh // 2 + rh + 1, kw // 2 - rw:kw // 2 + rw + 1]
    if reach == [0, 0] and conv.groups == conv.in_channels == conv.out_channels:
        # a 1x1 depthwise conv is a per-channel scale (CPU backends run depthwise backward slowly)
        out = x * weight.to(x.dtype).view(1, -1, 1, 1)
        return out if bias is None else out + bias.to(x.dtype).view(1, -1, 1, 1)
    return F.conv2d(x, weight, bias, 1, (rh * dilation[0], rw * dilation[1]), dilation, conv.groups)


def eval_bn_affine(bn: _BatchNorm) -> tuple[Tensor, Tensor]:
    """(s, t) with BN(z) = s * z + t per channel for an eval-mode BN.

    Kept on the BN while its tensors are the same objects at the same version (in-place updates such as
    ``load_state_dict`` bump it) and need no gradient; recomputed otherwise.
    """
    sources = [bn.running_mean, bn.running_var] + ([bn.weight, bn.bias] if bn.affine else [])
    needs_grad = torch.is_grad_enabled() and any(t.requires_grad for t in sources)
    stamp = tuple((id(t), t._version) for t in sources) + (bn.eps,)
    cached = bn.__dict__.get("_folded_affine")
    if cached is not None and cached[0] == stamp and not needs_grad:
        return cached[1], cached[2]
    scale = torch.rsqrt(bn.running_var + bn.eps)
    shift = -bn.running_mean * scale
    if bn.affine:
        scale = scale * bn.weight
        shift = shift * bn.weight + bn.bias
    if not needs_grad and not torch.is_inference_mode_enabled():  # inference tensors could not join a backward
        bn.__dict__["_folded_affine"] = (stamp, scale, shift, sources)  # sources kept: their ids stay unique
    return scale, shift
