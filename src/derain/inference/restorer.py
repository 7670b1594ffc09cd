"""Restorer: a model with its weights, ready to run on images.

``restorer(x)`` accepts a float tensor (NCHW or CHW, RGB in [0, 1]), a PIL image or a NumPy array (HWC or HW;
uint8, uint16 or float in [0, 1]; grey, RGB or with alpha) and returns the same kind: same dtype, same channels,
alpha passed through untouched. It moves the input to the model's device and dtype, flips channels for weights
trained on BGR, and tiles large images (``tile=``, or automatically when the image would not fit in memory).
"""

from __future__ import annotations

import os
from dataclasses import replace
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn

from derain.archs import family_of
from derain.device import resolve_device
from derain.errors import InputError
from derain.inference.scale import Scale, derain_scaled, resolve_scale
from derain.inference.tiling import run_tiled
from derain.io import from_tensor, to_tensor
from derain.types import DerainOutput, Placement, check_image
from derain.weights import LoadedWeights, load_weights

Strength = float | Literal["auto"]  # Restorer.__call__: "auto" (the model's gate) or a share from 0 to 1


class Restorer:
    """Callable wrapper: ``restorer(x)`` returns the clean image clamped to [0, 1]; ``run`` returns everything."""

    def __init__(self, model: nn.Module, *, name: str, channel_order: str = "rgb",
                 device: str | torch.device = "auto", dtype: torch.dtype = torch.float32,
                 weights: LoadedWeights | None = None) -> None:
        if channel_order not in ("rgb", "bgr"):
            raise InputError(f"channel_order must be 'rgb' or 'bgr', got {channel_order!r}")
        self.name = name
        self.channel_order = channel_order
        self.family = family_of(model)  # how to tile it; an unregistered architecture is refused here
        self.device = resolve_device(device)
        self.dtype = dtype
        self.weights = weights
        # channels_last runs the convolutions of these models 1.5-3x faster on CPU (oneDNN).
        self._memory_format = torch.channels_last if self.device.type == "cpu" else torch.contiguous_format
        self.model = model.eval().to(device=self.device, dtype=dtype, memory_format=self._memory_format)

    def __repr__(self) -> str:
        return f"Restorer({self.name!r}, device={self.device}, dtype={self.dtype})"

    def to(self, dtype: torch.dtype) -> Restorer:
        """The same weights computing in ``dtype`` (``torch.float16``: GPUs only, faster, slightly less exact)."""
        if dtype == torch.float16 and self.device.type != "cuda":
            raise InputError("float16 (--half) needs a CUDA GPU; on the CPU run in float32 (leave out --half)")
        return Restorer(self.model.float(), name=self.name, channel_order=self.channel_order, device=self.device,
                        dtype=dtype, weights=self.weights)

    def _flip(self, x: Tensor) -> Tensor:
        return x.flip(1) if self.channel_order == "bgr" else x

    @property
    def accepts_placement(self) -> bool:
        """Whether the model's forward takes ``placement=`` (where a window sits in the whole image); tiling then
        passes it, so the window is computed on the whole image's grid (SIAN's ``align_corners`` up-sampling)."""
        return bool(getattr(self.model, "accepts_placement", False))

    def _input(self, x: Tensor) -> Tensor:
        return self._flip(x).to(device=self.device, dtype=self.dtype).contiguous(memory_format=self._memory_format)

    def _forward(self, x: Tensor, placement: Placement | None = None, **choice: Tensor) -> DerainOutput:
        extra: dict[str, Any] = dict(choice)
        if placement is not None:
            extra["placement"] = placement
        with torch.inference_mode():
            return self.model(self._input(x), **extra)

    def _choice(self, x: Tensor) -> dict[str, Tensor]:
        """Decisions a model makes on the whole image (which network of a pair), made once so tiles agree."""
        route = getattr(self.model, "route", None)
        if route is None:
            return {}
        with torch.inference_mode():
            return {"heavy": route(self._input(x))}

    def run(self, x: Tensor) -> DerainOutput:
        """Every stage and attention map, unclamped, on the input's device; channel order as the input's (RGB).
        Runs the whole image in one piece (see ``__call__`` for tiling)."""
        batched = not (isinstance(x, Tensor) and x.ndim == 3)
        x = check_image(x if batched else x[None])
        out = self._forward(x)

        def back(t: Tensor, *, image: bool = True) -> Tensor:
            t = (self._flip(t) if image else t).to(device=x.device, dtype=x.dtype).contiguous()
            return t if batched else t[0]

        return replace(out, image=back(out.image), stages=tuple(back(s) for s in out.stages),
                       attention=tuple(back(a, image=False) for a in out.attention))

    def auto_tile(self, height: int, width: int) -> int | None:
        """A tile size when a ``height x width`` forward would not fit in half the free memory, else None."""
        need = self.family.bytes_per_pixel * height * width * (2 if self.dtype == torch.float32 else 1)
        budget = _free_memory(self.device) / 2
        if need <= budget:
            return None
        side = int((budget / (self.family.bytes_per_pixel * 2)) ** 0.5)
        return max(side // 16 * 16, 2 * self.family.overlap + 64)

    def _image(self, x: Tensor, tile: int | None, overlap: int | None, scale: Scale = 1, *,
               gate: bool = True) -> Tensor:
        """(N, 3, H, W) checked input -> clamped output, at the working ``scale``, tiled when asked or needed;
        ``gate``: with the model's gate applied (if it has one) at the working scale."""
        return derain_scaled(lambda t: self._at_scale(t, tile, overlap, gate), x, resolve_scale(scale, x))

    def _at_scale(self, x: Tensor, tile: int | None, overlap: int | None, gate: bool = True) -> Tensor:
        out = self._whole(x, tile, overlap)
        return self._gated(x, out) if gate else out

    def finish(self, x: Tensor, out: Tensor, strength: Strength = "auto") -> Tensor:
        """``out`` (the model's clamped output for the whole of ``x``, at scale 1) as ``__call__`` would return it
        with ``strength``: the gate's share of the rain layer (``"auto"``) or ``strength`` of it."""
        strength = check_strength(strength)
        return self._gated(x, out) if strength == "auto" else blend(x, out, strength)

    def _with_strength(self, x: Tensor, tile: int | None, overlap: int | None, scale: Scale,
                       strength: Strength) -> Tensor:
        """The output for a checked ``strength``: the gate's (``"auto"``), or that share of the whole rain layer
        (0: the input, without running the model)."""
        if strength == "auto":
            return self._image(x, tile, overlap, scale)
        return blend(x, self._image(x, tile, overlap, scale, gate=False) if strength else x, strength)

    def _gated(self, x: Tensor, out: Tensor) -> Tensor:
        """A model with a gate (derain.default's ``gated``: how much of the rain layer to remove, decided on the
        whole image at the working scale, after tiling) applies it here."""
        gated = getattr(self.model, "gated", None)
        if gated is None:
            return out
        with torch.inference_mode():
            done = gated(*(self._flip(t).to(device=self.device, dtype=torch.float32) for t in (x, out)))
        return self._flip(done).to(device=x.device, dtype=x.dtype).clamp(0, 1)

    def _whole(self, x: Tensor, tile: int | None, overlap: int | None) -> Tensor:
        tile = tile if tile is not None else self.auto_tile(x.shape[-2], x.shape[-1])
        if tile is None or (tile >= x.shape[-2] and tile >= x.shape[-1]):
            return self._flip(self._forward(x).image).to(device=x.device, dtype=x.dtype).clamp(0, 1)
        overlap = self.family.overlap if overlap is None else overlap
        overlap = min(overlap, tile // 2)
        choice = self._choice(x)

        def piece(t: Tensor, placement: Placement | None = None) -> Tensor:
            return self._flip(self._forward(t, placement, **choice).image).to(device=x.device, dtype=torch.float32)

        # The whole-image forward would see ``x`` itself, so the windows' placements are in ``x``'s geometry.
        return run_tiled(piece, x, tile=tile, overlap=overlap, align=self.family.align,
                         placed=self.accepts_placement).clamp(0, 1).to(x.dtype)

    def __call__(self, x: Any, *, tile: int | None = None, overlap: int | None = None,
                 scale: Scale = "auto", strength: Strength = "auto") -> Any:
        """The clean image, clamped to [0, 1], in the input's own kind (tensor, PIL image or NumPy array).

        strength: how much of the rain layer the model finds is removed. ``"auto"`` (default): what the model's gate
        decides per image (derain.default leaves an image alone where it finds no rain or would only damage it;
        a model without a gate removes it all). A number from 0 to 1 (:func:`blend`) overrides the gate: 1 is the
        network's whole output, 0 returns the input exactly (the model is not run), 0.5 removes half the rain.

        scale: run the model on the image shrunk ``scale`` times and subtract the rain it finds, brought back to
        full resolution (:mod:`derain.inference.scale`); ``"auto"`` (default) picks it from the image's size, so
        images up to twice the training images' size (481x321) run as they are; ``1`` always does.
        tile / overlap: run in ``tile x tile`` windows (at the working scale) overlapping by ``overlap`` pixels
        (default: the model's measured receptive field). Without ``tile``, images too large for the free memory are
        tiled anyway.
        """
        strength = check_strength(strength)
        if isinstance(x, Tensor):
            batched = x.ndim != 3
            t = check_image(x if batched else x[None])
            out = self._with_strength(t, tile, overlap, scale, strength)
            return out if batched else out[0]
        if isinstance(x, Image.Image):
            return _to_pil(self(_from_pil(x), tile=tile, overlap=overlap, scale=scale, strength=strength), x)
        if isinstance(x, np.ndarray):
            if not strength:
                _split_array(x)  # the same checks as a real run
                return x.copy()
            colour, alpha, grey = _split_array(x)
            out = self._with_strength(colour, tile, overlap, scale, strength)
            return _join_array(out, alpha, grey, x.dtype)
        raise InputError(f"cannot derain a {type(x).__name__}; pass a float tensor (N, 3, H, W) in [0, 1], "
                         "a PIL image or a NumPy array (H, W[, C]) of uint8, uint16 or floats in [0, 1]")


def check_strength(strength: Strength) -> Strength:
    """``strength`` as ``"auto"`` or a float in [0, 1], or an :class:`InputError` saying what it must be."""
    if isinstance(strength, str) and strength.strip().lower() == "auto":
        return "auto"
    try:
        value = float(strength)
    except (TypeError, ValueError):
        raise InputError(f"strength must be 'auto' (the model's gate decides) or a number from 0 to 1, "
                         f"got {strength!r}") from None
    if not 0.0 <= value <= 1.0:  # also refuses NaN
        raise InputError(f"strength must be from 0 (leave the image as it is) to 1 (remove all the rain found), "
                         f"got {strength!r}")
    return value


def blend(rainy: Tensor, derained: Tensor, strength: float) -> Tensor:
    """Remove ``strength`` of the rain layer ``rainy - derained``: ``rainy - strength * (rainy - derained)``.
    0 gives ``rainy`` exactly, 1 gives ``derained``; in between, a linear blend (what photo tools call strength)."""
    if strength == 1.0:
        return derained
    if strength == 0.0:
        return rainy.clone()
    return (rainy + strength * (derained - rainy)).clamp(0, 1)


def _free_memory(device: torch.device) -> float:
    if device.type == "cuda":
        return float(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return float(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return float(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return 8e9


def _split_array(a: np.ndarray) -> tuple[Tensor, np.ndarray | None, bool]:
    """HW / HWC array -> ((1, 3, H, W) float tensor, alpha plane or None, whether it was grey)."""
    if a.ndim == 2:
        a = a[:, :, None]
    if a.ndim != 3 or a.shape[2] not in (1, 2, 3, 4):
        raise InputError(f"array has shape {a.shape}; expected (H, W) or (H, W, C) with C = 1 (grey), "
                         "2 (grey + alpha), 3 (RGB) or 4 (RGBA)")
    channels = a.shape[2]
    alpha = a[:, :, -1].copy() if channels in (2, 4) else None
    colour = a[:, :, : 3 if channels >= 3 else 1]
    return to_tensor(np.ascontiguousarray(colour)), alpha, channels in (1, 2)


def _join_array(out: Tensor, alpha: np.ndarray | None, grey: bool, dtype: np.dtype[Any]) -> np.ndarray:
    arr = from_tensor(out, dtype=dtype)
    if grey:
        arr = from_tensor(out.mean(dim=1, keepdim=True).expand(-1, 3, -1, -1), dtype=dtype)[:, :, :1]
    if alpha is not None:
        arr = np.concatenate([arr, alpha[:, :, None].astype(arr.dtype)], axis=2)
    return arr[:, :, 0] if grey and alpha is None else arr


def _from_pil(im: Image.Image) -> np.ndarray:
    if im.mode in ("RGB", "RGBA", "L", "LA"):
        return np.asarray(im)
    if im.mode in ("I;16", "I;16B", "I;16L"):
        return np.asarray(im).astype(np.uint16)
    if im.mode in ("P", "PA", "CMYK", "YCbCr", "LAB", "HSV", "1"):
        return np.asarray(im.convert("RGBA" if "A" in im.mode or "transparency" in im.info else "RGB"))
    raise InputError(f"PIL images of mode {im.mode!r} are not supported; convert to RGB first (im.convert('RGB'))")


def _to_pil(a: np.ndarray, like: Image.Image) -> Image.Image:
    if a.dtype == np.uint16:
        return Image.fromarray(a if a.ndim == 2 else (a[:, :, 0] if a.shape[2] == 1 else a))
    return Image.fromarray(a)


DEFAULT_WEIGHTS = "derain.default"  # the bundled default model (configs/default.yaml)


def load(name_or_path: str | os.PathLike[str] | LoadedWeights = DEFAULT_WEIGHTS, *,
         device: str | torch.device = "auto", dtype: torch.dtype = torch.float32) -> Restorer:
    """A ready-to-run :class:`Restorer` from a catalog name (``"sian.rain100l"``; default: the bundled
    ``derain.default``) or a checkpoint path."""
    weights = name_or_path if isinstance(name_or_path, LoadedWeights) else load_weights(name_or_path)
    return Restorer(weights.build(), name=weights.name, channel_order=weights.channel_order,
                    device=device, dtype=dtype, weights=weights)
