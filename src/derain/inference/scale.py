"""Deraining at the scale the rain lives at.

Every model here learned rain from ~481x321 images, where a streak is 1-3 pixels wide; in a camera photo the same
streak is 5-15 pixels wide and the models pass it through. At ``scale=s`` the model sees the image shrunk by
``s``, where streaks look like its training data; what it removes there (the rain layer) is brought back to full
resolution and subtracted from the full-resolution image, so detail that is not rain is never resampled.

The rain layer comes back through a guided filter (He et al., "Guided Image Filtering", TPAMI 2013; the fast
variant, He & Sun 2015): per channel and per window, the rain layer at the working scale is fitted as
``a * image + b``; the coefficients are smoothed, up-sampled and applied to the full-resolution image, so the
layer follows the full-resolution streak edges instead of a blurred copy of them (``upsample="bicubic"``:
plain interpolation, for comparison; ``benchmarks/highres.py`` measures both).

``scale="auto"`` picks the working scale from the image (:func:`estimate_scale`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

import torch.nn.functional as F
from torch import Tensor

from derain.errors import InputError

Scale = int | Literal["auto"]
Upsample = Literal["guided", "bicubic"]
UPSAMPLES: tuple[str, ...] = ("guided", "bicubic")

TRAINING_SIDE = 321     # short side of the images the models were trained on (Rain100 and BSDS500: 481x321)
MAX_SCALE = 16


def check_scale(scale: object) -> Scale:
    """``scale`` as given by a user: ``"auto"`` or a whole number 1..16."""
    if scale == "auto":
        return "auto"
    if isinstance(scale, str) and scale.isdigit():
        scale = int(scale)
    if isinstance(scale, bool) or not isinstance(scale, int) or not 1 <= scale <= MAX_SCALE:
        raise InputError(f"scale must be 'auto' or a whole number from 1 to {MAX_SCALE}, got {scale!r} "
                         "(1 runs the model on the image as it is; 4 runs it on the image shrunk 4 times)")
    return scale


def largest_scale(height: int, width: int) -> int:
    """The coarsest working scale for an image: its short side must not shrink below the training images'."""
    return max(1, min(MAX_SCALE, min(height, width) // TRAINING_SIDE))


def estimate_scale(x: Tensor) -> int:
    """The working scale for ``x`` (N, 3, H, W): its short side over the training images' (rounded down, so an
    image at the training scale, or up to twice it, runs as it is)."""
    return largest_scale(x.shape[-2], x.shape[-1])


def resolve_scale(scale: Scale, x: Tensor) -> int:
    scale = check_scale(scale)
    return estimate_scale(x) if scale == "auto" else scale


def downsample(x: Tensor, scale: int) -> Tensor:
    """``x`` shrunk ``scale`` times (anti-aliased bilinear; sizes rounded up)."""
    h, w = x.shape[-2:]
    size = (max(1, math.ceil(h / scale)), max(1, math.ceil(w / scale)))
    return F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)


def _box(x: Tensor, radius: int) -> Tensor:
    """Mean over (2r+1)^2 windows, shrinking at the borders (the guided filter's box filter)."""
    return F.avg_pool2d(x, 2 * radius + 1, stride=1, padding=radius, count_include_pad=False)


def guided_upsample(layer: Tensor, guide_low: Tensor, guide: Tensor, *, radius: int = 1,
                    eps: float = 1e-4) -> Tensor:
    """``layer`` (at ``guide_low``'s size) brought to ``guide``'s size by the fast guided filter, per channel."""
    mean_i = _box(guide_low, radius)
    mean_p = _box(layer, radius)
    cov_ip = _box(guide_low * layer, radius) - mean_i * mean_p
    var_i = _box(guide_low * guide_low, radius) - mean_i * mean_i
    a = cov_ip / (var_i + eps)
    b = mean_p - a * mean_i
    a, b = _box(a, radius), _box(b, radius)
    size = guide.shape[-2:]
    a = F.interpolate(a, size=size, mode="bilinear", align_corners=False)
    b = F.interpolate(b, size=size, mode="bilinear", align_corners=False)
    return a.mul_(guide).add_(b)


def upsample_layer(layer: Tensor, guide_low: Tensor, guide: Tensor, how: Upsample = "guided") -> Tensor:
    if how == "guided":
        return guided_upsample(layer, guide_low, guide)
    if how == "bicubic":
        return F.interpolate(layer, size=guide.shape[-2:], mode="bicubic", align_corners=False)
    raise InputError(f"unknown up-sampling {how!r}; valid: {', '.join(UPSAMPLES)}")


def derain_scaled(derain: Callable[[Tensor], Tensor], x: Tensor, scale: int, *,
                  upsample: Upsample = "guided") -> Tensor:
    """``x`` less the rain layer that ``derain`` (clamped output in, clamped output out) finds in ``x`` shrunk
    ``scale`` times, brought back to full resolution; clamped to [0, 1]. ``scale=1`` is ``derain(x)``."""
    if scale == 1:
        return derain(x)
    work = x.float()
    low = downsample(work, scale)
    layer = low - derain(low).to(low.dtype)
    rain = upsample_layer(layer, low, work, upsample)
    return rain.neg_().add_(work).clamp_(0, 1).to(x.dtype)
