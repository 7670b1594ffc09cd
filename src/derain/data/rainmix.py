"""The ``rainmix`` rain style: Garg & Nayar's rendered streaks mixed through random geometric augmentation chains.

A second renderer beside :mod:`derain.data.diverse`, built the way Guo et al. (EfficientDeRain, AAAI 2021,
"RainMix") describe theirs, so that choices made on held-out photos are not made on one renderer alone
(``benchmarks/validation.py``). Nothing here was read off a test set:

- a streak map is a window of one of Garg & Nayar's rendered streak images (the ``rain_streaks`` data set, 104
  photometric renderings of falling drops, 536-600 x 320), one texture pixel becoming U(1, 2) image pixels
  (times ``scale``), so the streaks keep the scale of the 481 x 321 training photos;
- ``CHAINS`` (3) augmentation chains, each of one to three operations drawn from zoom (1-2x along one axis),
  shear (up to 0.3), rotation (up to 30 degrees either way) and translation, in the spirit of AugMix/RainMix;
- the chains are mixed with Dirichlet(1, 1, 1) weights and that mixture with the streak map itself by a Beta(1, 1)
  weight, as RainMix does;
- the mixed map, scaled by a per-image strength U(0.5, 1) (from half to the full brightness of the database's
  rendering), is added to the clean image and the result clipped to [0, 1] (additive composition, as RainMix and
  most synthetic sets do).

``rainmix_dense`` (:func:`add_dense_rainmix_rain`) is the same renderer at a higher rain density: ``DENSE_MAPS``
(two to four, uniformly) independent maps, each with its own texture, chains and strength, summed before the
clipping. Garg & Nayar render each texture for a given population of drops in the view; rain of a higher rate has
proportionally more drops in the same volume (Marshall & Palmer's number density grows with the rate), which the
sum of independent maps models. It is a held-out dense renderer: no network of ours trains on it, and the
validation suite uses it to check what a heavy-rain network loses outside its training rain (written before any
network ran on it; nothing here was read off a test set).

It needs the textures: pass them (:func:`derain.data.synthetic.load_textures`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from derain.data.synthetic import _uniform, texture_window
from derain.errors import InputError

CHAINS = 3
ZOOM = (1.0, 2.0)
SHEAR = 0.3
ROTATE = 30.0
STRENGTH = (0.5, 1.0)
TEXEL = (1.0, 2.0)  # image pixels per texture pixel at the training photos' scale
DENSE_MAPS = (2, 4)  # rainmix_dense: independent maps summed, drawn uniformly from this range (both ends included)


def _operation(g: torch.Generator) -> Tensor:
    """One random affine operation as a 2 x 3 matrix in normalised coordinates (output -> source)."""
    kind = int(torch.randint(0, 4, (), generator=g))
    m = torch.eye(2, 3)
    if kind == 0:  # zoom along one axis: the source window shrinks by the factor
        axis = int(torch.randint(0, 2, (), generator=g))
        m[axis, axis] = 1 / _uniform(g, *ZOOM)
    elif kind == 1:  # shear along one axis
        axis = int(torch.randint(0, 2, (), generator=g))
        m[axis, 1 - axis] = _uniform(g, -SHEAR, SHEAR)
    elif kind == 2:
        t = math.radians(_uniform(g, -ROTATE, ROTATE))
        m[:, :2] = torch.tensor([[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]])
    else:  # translation by up to a third of the window
        m[:, 2] = torch.tensor([_uniform(g, -0.33, 0.33), _uniform(g, -0.33, 0.33)])
    return m


def _compose(a: Tensor, b: Tensor) -> Tensor:
    """The 2 x 3 affine map ``x -> a(b(x))``."""
    full = torch.eye(3)
    out = torch.eye(3)
    full[:2] = b
    out[:2] = a
    return (out @ full)[:2]


def _sample(window: Tensor, theta: Tensor, h: int, w: int) -> Tensor:
    side = window.shape[-1]
    fit = torch.tensor([[w / side, 0.0, 0.0], [0.0, h / side, 0.0]])  # the centre h x w of the window, unwarped
    grid = F.affine_grid(_compose(theta, fit)[None], [1, 1, h, w], align_corners=False)
    return F.grid_sample(window, grid, mode="bilinear", padding_mode="reflection", align_corners=False)[0, 0]


def rainmix_layer(h: int, w: int, textures: Sequence[Tensor], g: torch.Generator, scale: float = 1.0) -> Tensor:
    """The mixed streak map ``(h, w)`` in [0, 1] of one image."""
    if not textures:
        raise InputError("the rainmix style needs streak textures: add --textures rain_streaks (a data set's "
                         "name or a folder) on the command line, data.textures in a training config, or "
                         "textures=load_textures(folder) in Python")
    texture = textures[int(torch.randint(0, len(textures), (), generator=g))]
    window = texture_window(h, w, texture, g, texel=TEXEL, scale=scale)
    base = _sample(window, torch.eye(2, 3), h, w)
    weights = _dirichlet(g, CHAINS)
    mixed = torch.zeros(h, w)
    for k in range(CHAINS):
        theta = torch.eye(2, 3)
        for _ in range(int(torch.randint(1, 4, (), generator=g))):
            theta = _compose(_operation(g), theta)
        mixed = mixed + weights[k] * _sample(window, theta, h, w)
    m = _beta11(g)
    return (m * base + (1 - m) * mixed).clamp(0, 1)


def _dirichlet(g: torch.Generator, k: int) -> Tensor:
    """Dirichlet(1, ..., 1) from the generator: normalised exponentials."""
    e = -torch.log(torch.rand(k, generator=g).clamp(min=1e-12))
    return e / e.sum()


def _beta11(g: torch.Generator) -> float:
    return float(torch.rand((), generator=g))  # Beta(1, 1) is uniform


def add_rainmix_rain(clean: Tensor, g: torch.Generator, textures: Sequence[Tensor], *,
                     mask_threshold: float = 0.05, scale: float = 1.0) -> tuple[Tensor, Tensor]:
    """RainMix rain on a clean ``(3, H, W)`` image in [0, 1]: ``(rainy, mask)``, the mask 1 where the streaks add
    more than ``mask_threshold``."""
    h, w = clean.shape[-2:]
    return _added(clean, rainmix_layer(h, w, textures, g, scale) * _uniform(g, *STRENGTH), mask_threshold)


def add_dense_rainmix_rain(clean: Tensor, g: torch.Generator, textures: Sequence[Tensor], *,
                           mask_threshold: float = 0.05, scale: float = 1.0) -> tuple[Tensor, Tensor]:
    """Dense RainMix rain on a clean ``(3, H, W)`` image in [0, 1]: the sum of ``DENSE_MAPS`` independent maps,
    added and clipped; ``(rainy, mask)`` as :func:`add_rainmix_rain`."""
    h, w = clean.shape[-2:]
    count = int(torch.randint(DENSE_MAPS[0], DENSE_MAPS[1] + 1, (), generator=g))
    streaks = sum((rainmix_layer(h, w, textures, g, scale) * _uniform(g, *STRENGTH) for _ in range(count)),
                  torch.zeros(h, w))
    return _added(clean, streaks.clamp(0, 1), mask_threshold)


def _added(clean: Tensor, streaks: Tensor, mask_threshold: float) -> tuple[Tensor, Tensor]:
    """``streaks`` (H, W) added to ``clean`` and clipped, and the mask where they add more than the threshold."""
    return (clean.float() + streaks[None]).clamp(0, 1), (streaks > mask_threshold).float()[None]
