"""The image convention, the one output type every model returns, and where a tile sits in its image.

Convention: a float tensor of shape ``(N, 3, H, W)``, RGB, values in ``[0, 1]``. It is checked at every public
boundary by :func:`check_image`; models themselves stay free of checks.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from derain.errors import InputError


@dataclass(frozen=True)
class DerainOutput:
    """What every derain model returns.

    image: the final clean estimate, ``(N, 3, H, W)``.
    stages: every stage's estimate in order (the last one is ``image``); a single-stage model holds ``(image,)``.
    attention: attention maps the model computes (SPANet's spatial attention), in order; empty when none.
    """

    image: Tensor
    stages: tuple[Tensor, ...] = field(default=())
    attention: tuple[Tensor, ...] = field(default=())


@dataclass(frozen=True)
class Placement:
    """Where a window sits in the image it was cut from (tiled inference): the image's height and width and the
    window's top-left pixel. Models whose output depends on the whole input's size take it (``SIAN``)."""

    image_height: int
    image_width: int
    top: int
    left: int


def check_image(x: object, *, name: str = "image", tolerance: float = 1e-3) -> Tensor:
    """Return ``x`` if it is a float NCHW RGB tensor in [0, 1]; raise :class:`InputError` saying what is off."""
    if not isinstance(x, torch.Tensor):
        raise InputError(f"{name} must be a torch.Tensor, got {type(x).__name__}; "
                         "read files with derain.io.read_image and convert with derain.io.to_tensor")
    if not x.is_floating_point():
        raise InputError(f"{name} has dtype {x.dtype}; expected a float tensor in [0, 1] "
                         "(divide 8-bit data by 255, 16-bit data by 65535)")
    if x.ndim != 4 or x.shape[1] != 3:
        raise InputError(f"{name} has shape {tuple(x.shape)}; expected (N, 3, H, W) RGB "
                         "(add a batch dimension with x[None], move channels first with x.permute(2, 0, 1))")
    if x.shape[2] < 1 or x.shape[3] < 1 or x.shape[0] < 1:
        raise InputError(f"{name} has shape {tuple(x.shape)}; every dimension must be at least 1")
    if x.numel():
        lo, hi = float(x.min()), float(x.max())
        if lo != lo or hi != hi:
            raise InputError(f"{name} contains NaN values")
        if lo < -tolerance or hi > 1 + tolerance:
            raise InputError(f"{name} has values in [{lo:.4g}, {hi:.4g}]; expected [0, 1] "
                             "(divide 8-bit data by 255, 16-bit data by 65535)")
    return x
