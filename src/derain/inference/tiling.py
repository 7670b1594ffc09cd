"""Tiled inference with feathered overlaps, for images too large to run in one piece.

The image is cut into ``tile x tile`` windows that overlap by ``overlap`` pixels. Every window is run on its own;
its output is weighted by a feathered mask that ignores the first quarter of the overlap next to an inner edge
(where the model missed context), ramps linearly across the middle half and is 1 elsewhere (and at the image's
own borders, where there is no neighbour). The weighted outputs are summed and normalised, so seams vanish and a
pixel's value comes from windows that saw at least ``overlap / 4`` pixels of context around it.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from derain.errors import InputError


def tile_starts(size: int, tile: int, overlap: int) -> list[int]:
    """Window starts along one axis: stride ``tile - overlap``, the last window flush with the end."""
    if size <= tile:
        return [0]
    stride = tile - overlap
    starts = list(range(0, size - tile, stride))
    starts.append(size - tile)
    return starts


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


def run_tiled(fn: Callable[[Tensor], Tensor], x: Tensor, *, tile: int, overlap: int,
              progress: Callable[[int, int], None] | None = None) -> Tensor:
    """``fn`` applied to ``x`` ``(N, C, H, W)`` window by window; returns the blended ``(N, C', H, W)``.

    ``fn`` must keep the spatial size. ``tile`` must exceed ``overlap``; windows never exceed the image.
    """
    if tile < 8:
        raise InputError(f"tile must be at least 8 pixels, got {tile}")
    if not 0 <= overlap < tile:
        raise InputError(f"overlap must be in [0, tile) = [0, {tile}), got {overlap}")
    n, _, h, w = x.shape
    th, tw = min(tile, h), min(tile, w)
    ys, xs = tile_starts(h, th, overlap), tile_starts(w, tw, overlap)
    total = len(ys) * len(xs)
    if total == 1:
        return fn(x)
    out: Tensor | None = None
    weight = torch.zeros(1, 1, h, w, device=x.device)
    done = 0
    for y0 in ys:
        wy = _ramp(th, overlap, y0 == 0, y0 + th == h, x.device)
        for x0 in xs:
            wx = _ramp(tw, overlap, x0 == 0, x0 + tw == w, x.device)
            piece = fn(x[..., y0:y0 + th, x0:x0 + tw])
            if out is None:
                out = torch.zeros(n, piece.shape[1], h, w, device=x.device, dtype=torch.float32)
            mask = (wy[:, None] * wx[None, :])[None, None]
            out[..., y0:y0 + th, x0:x0 + tw] += piece.float() * mask
            weight[..., y0:y0 + th, x0:x0 + tw] += mask
            done += 1
            if progress is not None:
                progress(done, total)
    assert out is not None
    return (out / weight.clamp_min(1e-8)).to(x.dtype)
