"""The ``photoshop`` rain style: the rain recipe of the image-editing tutorials, the way most synthetic sets were made.

Many published training and test sets were rendered in Photoshop with one recipe; this style follows it so that
training sees that kind of rain too, with ranges taken from the tutorials' own settings, never from a test set
(rule 12 of DESIGN.md; the ``light``/``heavy`` styles, fitted to Rain100L/H, share none of these numbers):

1. a layer filled with black, then *Add Noise*, Gaussian, monochromatic, amount 60-135% (the tutorials use 60,
   amounts over 100% saturate), taken here as a normal of standard deviation ``amount / 2`` clipped to [0, 1], one
   grain per photo pixel;
2. half the time a slight *Gaussian Blur* (0.3-0.7 px; the tutorials' "very slight, perhaps 0.7 pixels");
3. *Motion Blur*, distance 3-15 px at the 481 x 321 training photos' size (the tutorials: "between 3 and 10,
   depending on the pixel dimensions", 10 and 15 in others), its angle within 45 degrees of vertical (the
   tutorials' 73 degrees from horizontal is 17 from vertical; the wider range is the wind of ``diverse``);
4. *Levels* until the layer is "mostly black with a few lines of white": the black point at the layer's 85th to
   98th percentile, the white point at its 99.9th;
5. blend mode *Screen* at an opacity of 60-90% (the tutorials' 60-80%, to 90% for bright rain): the pixel becomes
   ``1 - (1 - x)(1 - o L)``, so a streak brightens a dark background more than a bright one.

Half the images get a second such layer (its own draw, its angle within 5 degrees of the first), as the tutorials
duplicate the rain layer for depth. ``scale`` draws the rain of a photo that many times the training size: grains,
blur and streaks that many times larger.

``photoshop_dense`` (:func:`add_dense_photoshop_rain`) is the same recipe at a higher rain density: ``DENSE_LAYERS``
(two to four, uniformly) such layers, each its own draw within 5 degrees of the first, screened one over another,
as the tutorials duplicate the layer for heavier rain (rain of a higher rate has proportionally more drops in the
same volume, which independent layers model, as ``rainmix_dense`` does for its renderer). It is a held-out dense
renderer for the heavy-rain network: its streaks are noise through a motion blur, not Garg & Nayar's textures, so
it shares no streak with that network's training rain (``heavy``, ``diverse``, ``downpour``); the light network
trains on ``photoshop`` itself, at one or two layers. Nothing here was read off a test set.

``photoshop_crossed`` (:func:`add_crossed_photoshop_rain`) is dense rain of several directions in one image:
``CROSSED_LAYERS`` (three to five) layers, each at its own angle drawn independently within 45 degrees of vertical,
screened one over another. Published synthetic sets were made this way: Yang et al. (CVPR 2017, "Deep joint rain
detection and removal from a single image") describe their heavy set's rain as streaks of five directions, while
``photoshop_dense`` keeps every layer within 5 degrees of the first. The layer count and the angle range are that
description and ``ANGLE``; no image or statistic of any set was read. A validation renderer, trained on by nothing.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from derain.data.synthetic import _gaussian_blur, _line_kernel, _uniform

AMOUNT = (0.60, 1.35)
BLUR = (0.3, 0.7)
DISTANCE = (3.0, 15.0)  # pixels at the training photos' size
ANGLE = 45.0
BLACK = (0.85, 0.98)  # the Levels black point, as a quantile of the blurred layer
WHITE = 0.999
OPACITY = (0.6, 0.9)
DENSE_LAYERS = (2, 4)  # photoshop_dense: layers screened one over another, drawn uniformly (both ends included)
CROSSED_LAYERS = (3, 5)  # photoshop_crossed: layers of independent directions (up to the five of Yang et al. 2017)


def photoshop_layer(h: int, w: int, angle: float, g: torch.Generator, scale: float = 1.0) -> Tensor:
    """One rain layer ``(h, w)`` in [0, 1] by the recipe: noise, a slight blur half the time, motion blur, levels."""
    amount = _uniform(g, *AMOUNT)
    blur = _uniform(g, *BLUR) * scale if float(torch.rand((), generator=g)) < 0.5 else 0.0
    kernel = _line_kernel(_uniform(g, *DISTANCE) * scale, angle)
    margin = kernel.shape[-1] // 2 + math.ceil(3 * blur)
    hh, ww = h + 2 * margin, w + 2 * margin
    gh, gw = math.ceil(hh / scale), math.ceil(ww / scale)  # one grain per photo pixel
    noise = (torch.randn(gh, gw, generator=g) * (amount / 2)).clamp(0, 1)[None, None]
    if scale != 1.0:
        noise = F.interpolate(noise, size=(hh, ww), mode="nearest")
    layer = F.conv2d(_gaussian_blur(noise, blur), kernel[None, None])[0, 0]
    top = layer.shape[0] - h, layer.shape[1] - w
    layer = layer[top[0] // 2:top[0] // 2 + h, top[1] // 2:top[1] // 2 + w]
    flat = layer.flatten()
    flat = flat[::max(1, flat.numel() // (1 << 20))]  # quantile of a large image on a subsample
    black = float(flat.quantile(_uniform(g, *BLACK)))
    white = max(float(flat.quantile(WHITE)), black + 1e-3)
    return ((layer - black) / (white - black)).clamp(0, 1)


def add_photoshop_rain(clean: Tensor, g: torch.Generator, *, mask_threshold: float = 0.05,
                       scale: float = 1.0) -> tuple[Tensor, Tensor]:
    """Photoshop-recipe rain on a clean ``(3, H, W)`` image in [0, 1]: ``(rainy, mask)``, the mask 1 where the rain
    brightens the image by more than ``mask_threshold``."""
    angle = _uniform(g, -ANGLE, ANGLE)
    layers = 1 if float(torch.rand((), generator=g)) < 0.5 else 2
    return _screened(clean, g, layers, lambda k: _near(angle, k, g), mask_threshold, scale)


def add_dense_photoshop_rain(clean: Tensor, g: torch.Generator, *, mask_threshold: float = 0.05,
                             scale: float = 1.0) -> tuple[Tensor, Tensor]:
    """Dense Photoshop-recipe rain: ``DENSE_LAYERS`` layers screened one over another; ``(rainy, mask)`` as
    :func:`add_photoshop_rain`."""
    angle = _uniform(g, -ANGLE, ANGLE)
    count = int(torch.randint(DENSE_LAYERS[0], DENSE_LAYERS[1] + 1, (), generator=g))
    return _screened(clean, g, count, lambda k: _near(angle, k, g), mask_threshold, scale)


def add_crossed_photoshop_rain(clean: Tensor, g: torch.Generator, *, mask_threshold: float = 0.05,
                               scale: float = 1.0) -> tuple[Tensor, Tensor]:
    """Dense Photoshop-recipe rain of several directions: ``CROSSED_LAYERS`` layers, each at its own angle within
    ``ANGLE`` degrees of vertical, screened one over another; ``(rainy, mask)`` as :func:`add_photoshop_rain`."""
    count = int(torch.randint(CROSSED_LAYERS[0], CROSSED_LAYERS[1] + 1, (), generator=g))
    return _screened(clean, g, count, lambda k: _uniform(g, -ANGLE, ANGLE), mask_threshold, scale)


def _near(angle: float, k: int, g: torch.Generator) -> float:
    """Layer ``k``'s direction when the layers share one: the first at ``angle``, each other within 5 degrees."""
    return angle + (_uniform(g, -5.0, 5.0) if k else 0.0)


def _screened(clean: Tensor, g: torch.Generator, layers: int, angle_of: Callable[[int], float],
              mask_threshold: float, scale: float) -> tuple[Tensor, Tensor]:
    """``layers`` rain layers, layer ``k`` at ``angle_of(k)`` (drawn from ``g`` just before the layer), each blended
    by Screen at its own opacity over ``clean``; the mask where the rain brightens the image by more than
    ``mask_threshold``."""
    h, w = clean.shape[-2:]
    x = clean.float()
    for k in range(layers):
        layer = photoshop_layer(h, w, angle_of(k), g, scale)
        x = 1 - (1 - x) * (1 - _uniform(g, *OPACITY) * layer[None])  # Screen at the layer's opacity
    rainy = x.clamp(0, 1)
    return rainy, ((rainy - clean.float()).mean(0, keepdim=True) > mask_threshold).float()
