"""Tiled inference with feathered overlaps, for images too large to run in one piece.

The image is cut into ``tile x tile`` windows that overlap by ``overlap`` pixels. Every window is run on its own;
its output is weighted by a feathered mask that ignores the first quarter of the overlap next to an inner edge
(where the model missed context), ramps linearly across the middle half and is 1 elsewhere (and at the image's
own borders, where there is no neighbour). The weighted outputs are summed and normalised, so seams vanish and a
pixel's value comes from windows that saw at least ``overlap / 4`` pixels of context around it.

Models whose output depends on the whole input's size (SIAN's ``align_corners=True`` up-sampling) can be told where
each window sits: with ``placed=True``, ``fn`` is called as ``fn(window, placement)`` with a :class:`Placement`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from derain.errors import InputError
from derain.types import Placement


def tile_windows(size: int, tile: int, overlap: int, align: int = 1) -> list[tuple[int, int]]:
    """Windows ``(start, stop)`` along one axis: stride ``tile - overlap``, the last one ending at ``size``.

    With ``align`` > 1 every start is a multiple of ``align`` (models that pool by ``align`` then see the same
    pooling grid in a window as in the whole image); the last window then starts at the aligned position at or
    before ``size - tile`` and is up to ``align - 1`` pixels longer than ``tile``.
    """
    if size <= tile:
        return [(0, size)]
    stride = max((tile - overlap) // align * align, align)
    last = (size - tile) // align * align
    starts = [*range(0, last, stride), last]
    return [(s, min(s + tile, size)) if s != last else (s, size) for s in starts]


def tile_starts(size: int, tile: int, overlap: int) -> list[int]:
    """Window starts along one axis (``align`` 1): stride ``tile - overlap``, the last window flush with the end."""
    return [start for start, _ in tile_windows(size, tile, overlap)]


def _ramp(length: int, overlap: int, at_start: bool, at_end: bool, device: torch.device) -> Tensor:
    """1-D feather weights of a window of ``length``; ``at_start``/``at_end``: the side borders the image."""
    w = torch.ones(length, device=device)
    if overlap <= 0:
        return w
    skip, ramp = overlap // 4, max(overlap - 2 * (overlap // 4), 1)
    d = torch.arange(length, device=device, dtype=torch.float32)
    rise = ((d - skip + 1) / (ramp + 1)).clamp(0, 1)
    if not at_start:
        w = torch.minimum(w, rise)
    if not at_end:
        w = torch.minimum(w, rise.flip(0))
    return w


def run_tiled(fn: Callable[..., Tensor], x: Tensor, *, tile: int, overlap: int, align: int = 1,
              placed: bool = False, progress: Callable[[int, int], None] | None = None) -> Tensor:
    """``fn`` applied to ``x`` ``(N, C, H, W)`` window by window; returns the blended ``(N, C', H, W)``.

    ``fn(window)`` must keep the spatial size; with ``placed`` it is called as ``fn(window, placement)`` (the
    :class:`Placement` of the window in ``x``; also for a single window covering all of ``x``). ``tile`` must
    exceed ``overlap``; windows never exceed the image.
    """
    if tile < 8:
        raise InputError(f"tile must be at least 8 pixels, got {tile}")
    if not 0 <= overlap < tile:
        raise InputError(f"overlap must be in [0, tile) = [0, {tile}), got {overlap}")
    n, _, h, w = x.shape
    ys, xs = tile_windows(h, tile, overlap, align), tile_windows(w, tile, overlap, align)
    total = len(ys) * len(xs)

    def call(y0: int, x0: int, window: Tensor) -> Tensor:
        extra: tuple[Any, ...] = (Placement(image_height=h, image_width=w, top=y0, left=x0),) if placed else ()
        return fn(window, *extra)

    if total == 1:
        return call(0, 0, x)
    out: Tensor | None = None
    weight = torch.zeros(1, 1, h, w, device=x.device)
    done = 0
    for y0, y1 in ys:
        wy = _ramp(y1 - y0, overlap, y0 == 0, y1 == h, x.device)
        for x0, x1 in xs:
            wx = _ramp(x1 - x0, overlap, x0 == 0, x1 == w, x.device)
            piece = call(y0, x0, x[..., y0:y1, x0:x1])
            if out is None:
                out = torch.zeros(n, piece.shape[1], h, w, device=x.device, dtype=torch.float32)
            mask = (wy[:, None] * wx[None, :])[None, None]
            out[..., y0:y1, x0:x1] += piece.float() * mask
            weight[..., y0:y1, x0:x1] += mask
            done += 1
            if progress is not None:
                progress(done, total)
    assert out is not None
    return (out / weight.clamp_min(1e-8)).to(x.dtype)
