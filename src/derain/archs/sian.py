"""SIAN — scale-space invariant attention network (Pang et al., ACM MM 2020; official name RPDNet).

Six weight-shared stages. Each stage takes ``concat[O, X_{t-1}]``, builds a difference-of-Gaussian pyramid on its
features (3 octaves x 5 DoG layers), gates average-pooled features (1/4, 1/2, 1) with a sigmoid attention computed
from the DoG of the same scale, carries one ConvLSTM per scale from stage to stage, fuses coarse to fine and
predicts the rain layer ``R_t``; the stage output is ``X_t = O - R_t``. Follows the official code
(pangbo1997/RainRemoval); module names reproduce the official state_dict keys (including the unused
``body.conv_m`` block, kept so the released checkpoints load strictly).

Input and output are RGB in [0, 1]; outputs are not clamped.

Tiling: the coarse-to-fine up-sampling uses ``align_corners=True``, whose sampling grid depends on the whole map's
size, so a window run on its own would sample its coarse maps on a different grid than the whole image does.
``forward(window, placement=...)`` (see :class:`Placement`) samples on the whole image's grid instead; windows
must then start at multiples of ``2 ** (scales - 1)`` so that they also share the whole image's pooling grid.
"""

from __future__ import annotations

import itertools
import math
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from derain.archs.spec import Detected, Family, Preset, StateDict
from derain.types import DerainOutput, Placement

_BASE_SIGMA = 1.6
_INPUT_SIGMA = 0.5


def _conv(in_ch: int, out_ch: int, *, bias: bool = True) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, kernel_size=3, stride=1, padding=1, bias=bias)


def _gaussian_3x3(sigma: float) -> Tensor:
    coords = torch.tensor([-1.0, 0.0, 1.0], dtype=torch.float64)
    k = torch.exp(-(coords[:, None] ** 2 + coords[None, :] ** 2) / (2 * sigma**2))
    return (k / k.sum()).to(torch.float32)


def dog_sigmas(layers: int) -> list[float]:
    """The pre-blur sigma followed by the incremental SIFT sigmas for ``layers`` Gaussian maps per octave."""
    k = 2 ** (1 / (layers - 3))
    pre = math.sqrt(_BASE_SIGMA**2 - _INPUT_SIGMA**2)
    steps = [math.sqrt((_BASE_SIGMA * k**i) ** 2 - (_BASE_SIGMA * k ** (i - 1)) ** 2) for i in range(1, layers)]
    return [pre, *steps]


def _grid_axis(out_len: int, in_len: int, full: int, offset: int, device: torch.device,
               ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """One axis of :func:`upsample2x_on_grid`: source indices (lower, upper) in the window, the upper one's
    weight and a validity mask (0 past the whole up-sampled map)."""
    # As PyTorch's align_corners=True: source = output * float32((full - 1) / (2 * full - 1)), in float32.
    g = torch.arange(out_len, device=device) + 2 * offset  # output pixel in the whole map
    scale = torch.tensor(full - 1, dtype=torch.float32) / max(2 * full - 1, 1)
    src = g.float() * scale.to(device)
    lo = src.long().clamp(max=full - 1)
    frac = src - lo.float()
    hi = (lo + 1).clamp(max=full - 1)
    # Whole-map indices to window indices; sources outside the window are clamped to its border.
    lo, hi = (lo - offset).clamp(0, in_len - 1), (hi - offset).clamp(0, in_len - 1)
    return lo, hi, frac, (g < 2 * full).float()


def upsample2x_on_grid(coarse: Tensor, *, size: tuple[int, int], full: tuple[int, int],
                       offset: tuple[int, int]) -> Tensor:
    """A window of ``F.interpolate(whole, scale_factor=2, mode="bilinear", align_corners=True)``, computed from the
    matching window of ``whole`` alone; zero past ``2 * H`` / ``2 * W`` (where :class:`FuseUp` pads).

    coarse: ``(N, C, h, w)``, the window of the whole ``full = (H, W)`` map whose top-left is at ``offset``.
    Returns ``(N, C, *size)``: output pixel ``(i, j)`` is the whole up-sampled map's pixel
    ``(2 * offset[0] + i, 2 * offset[1] + j)`` (zero past ``2 * H`` / ``2 * W``). Sources outside the window are
    clamped to its border, so only the first and last output row / column of a window inside the map can differ.
    """
    h, w = coarse.shape[2:]
    ys, yh, fy, vy = _grid_axis(size[0], h, full[0], offset[0], coarse.device)
    xs, xh, fx, vx = _grid_axis(size[1], w, full[1], offset[1], coarse.device)
    dt = coarse.dtype
    rows = (coarse.index_select(2, ys) * ((1 - fy) * vy).to(dt)[:, None]
            + coarse.index_select(2, yh) * (fy * vy).to(dt)[:, None])
    return (rows.index_select(3, xs) * ((1 - fx) * vx).to(dt)
            + rows.index_select(3, xh) * (fx * vx).to(dt))


class ResBlock(nn.Module):
    def __init__(self, *, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(_conv(channels, channels), nn.ReLU(), _conv(channels, channels), nn.ReLU())

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.body(x) + x)


class ScaleAttention(nn.Module):
    """One scale of the cross-scale aggregation: pooled features gated by a DoG attention mask."""

    def __init__(self, *, channels: int, dog_channels: int) -> None:
        super().__init__()
        self.conv_f = nn.Sequential(_conv(channels, channels))
        self.conv_m = nn.Sequential(_conv(dog_channels, channels), nn.Sigmoid())
        self.conv_z = nn.Sequential(_conv(channels, channels), nn.ReLU())

    def forward(self, features: Tensor, dog: Tensor) -> Tensor:
        p = self.conv_f(features)
        p = p + p * self.conv_m(dog)
        return self.conv_z(p)


class ConvLSTM(nn.Module):
    """ConvLSTM cell with biased input convolutions and bias-free hidden convolutions."""

    _GATES = ("f", "i", "o", "j")

    def __init__(self, *, channels: int) -> None:
        super().__init__()
        for g in self._GATES:
            setattr(self, f"conv_x{g}", _conv(channels, channels))
            setattr(self, f"conv_h{g}", _conv(channels, channels, bias=False))

    def forward(self, x: Tensor, h: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
        # The eight convolutions as one over concat[x, h] (the same sums, one kernel call).
        weight = torch.cat(
            [torch.cat([getattr(self, f"conv_x{g}").weight, getattr(self, f"conv_h{g}").weight], 1)
             for g in self._GATES]
        )
        bias = torch.cat([getattr(self, f"conv_x{g}").bias for g in self._GATES])
        f, i, o, j = F.conv2d(torch.cat([x, h], 1), weight, bias, padding=1).chunk(4, dim=1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(j)
        h = torch.sigmoid(o) * torch.tanh(c)
        return h, c


class FuseUp(nn.Module):
    def __init__(self, *, channels: int) -> None:
        super().__init__()
        self.conv_m = nn.Sequential(_conv(2 * channels, channels), nn.ReLU())

    def forward(self, fine: Tensor, coarse: Tensor, *,
                grid: tuple[tuple[int, int], tuple[int, int]] | None = None) -> Tensor:
        """grid: ``(full, offset)`` of the coarse map in the whole image's coarse map, for a window's forward."""
        if grid is not None:
            up = upsample2x_on_grid(coarse, size=(fine.shape[2], fine.shape[3]), full=grid[0], offset=grid[1])
            return self.conv_m(torch.cat([fine, up], 1))
        up = F.interpolate(coarse, scale_factor=2, mode="bilinear", align_corners=True)
        dy, dx = fine.shape[2] - up.shape[2], fine.shape[3] - up.shape[3]
        up = F.pad(up, [dx // 2, dx - dx // 2, dy // 2, dy - dy // 2])
        return self.conv_m(torch.cat([fine, up], 1))


class RPDBlock(nn.Module):
    """One stage's body: features, DoG pyramid, per-scale attention + ConvLSTM, coarse-to-fine fusion."""

    def __init__(self, *, channels: int, scales: int, gaussian_layers: int) -> None:
        super().__init__()
        self.scales = scales
        dog_channels = (gaussian_layers - 1) * channels
        self.tran_conv = _conv(6, channels)
        self.scale_conv = nn.ModuleList(
            ScaleAttention(channels=channels, dog_channels=dog_channels) for _ in range(scales)
        )
        self.up_conv = nn.ModuleList(FuseUp(channels=channels) for _ in range(scales - 1))
        # Present in the official model and checkpoints but never called.
        self.conv_m = nn.Sequential(_conv(channels, channels), nn.ReLU(), _conv(channels, channels), nn.ReLU())
        self.conv_m.requires_grad_(False)  # frozen: training (and DDP's gradient reduction) must not wait on it
        self.lstm = nn.ModuleList(ConvLSTM(channels=channels) for _ in range(scales))
        kernels = torch.stack([_gaussian_3x3(s) for s in dog_sigmas(gaussian_layers)])
        self.register_buffer("blur_kernels", kernels[:, None], persistent=False)

    def _blur(self, x: Tensor, index: int) -> Tensor:
        k = self.blur_kernels[index : index + 1].to(x.dtype).expand(x.shape[1], 1, 3, 3)
        return F.conv2d(x, k, padding=1, groups=x.shape[1])

    def _dog_pyramid(self, features: Tensor) -> list[Tensor]:
        """DoG stacks, coarsest first; each octave restarts from the max-pooled map at twice the base sigma."""
        g = self._blur(features, 0)
        pyramid = []
        for octave in range(self.scales):
            layers = [g]
            for i in range(1, self.blur_kernels.shape[0]):
                layers.append(self._blur(layers[-1], i))
            pyramid.append(torch.cat([b - a for a, b in itertools.pairwise(layers)], 1))
            if octave + 1 < self.scales:
                g = F.max_pool2d(layers[len(layers) - 3], 2)  # the map at twice the octave's base sigma
        return pyramid[::-1]

    def forward(self, z: Tensor, state: list[tuple[Tensor, Tensor]], *,
                placement: tuple[int, int, int, int] | None = None) -> tuple[Tensor, list[tuple[Tensor, Tensor]]]:
        """placement: ``(image_height, image_width, top, left)`` of ``z`` in the (padded) whole input, top and
        left multiples of ``2 ** (scales - 1)``; the up-sampling then follows the whole image's grid."""
        features = self.tran_conv(z)
        dogs = self._dog_pyramid(features)
        hidden, new_state = [], []
        for i in range(self.scales):
            pool = 2 ** (self.scales - 1 - i)
            p = F.avg_pool2d(features, pool) if pool > 1 else features
            h, c = self.lstm[i](self.scale_conv[i](p, dogs[i]), *state[i])
            hidden.append(h)
            new_state.append((h, c))
        y = hidden[0]
        for i in range(1, self.scales):
            grid = None
            if placement is not None:
                f = 2 ** (self.scales - i)  # the coarse map's pooling factor (sizes floor, as the pools do)
                height, width, top, left = placement
                grid = ((height // f, width // f), (top // f, left // f))
            y = self.up_conv[i - 1](hidden[i], y, grid=grid)
        return y, new_state


class SIAN(nn.Module):
    """Scale-space invariant attention network; ``forward`` returns every stage's estimate."""

    accepts_placement: ClassVar[bool] = True  # forward(window, placement=...) reproduces the whole image's grid

    def __init__(self, *, stages: int = 6, channels: int = 32, scales: int = 3, gaussian_layers: int = 6) -> None:
        super().__init__()
        if stages < 1 or scales < 1 or gaussian_layers < 5:
            raise ValueError("SIAN needs stages >= 1, scales >= 1 and gaussian_layers >= 5")
        self.stages = stages
        self.channels = channels
        self.scales = scales
        self.body = RPDBlock(channels=channels, scales=scales, gaussian_layers=gaussian_layers)
        self.body_end = nn.Sequential(ResBlock(channels=channels), ResBlock(channels=channels), _conv(channels, 3))

    def forward(self, rainy: Tensor, *, placement: Placement | None = None) -> DerainOutput:
        """placement: ``rainy`` is a window of a larger image (tiled inference); up-sample on that image's grid.

        The window's top and left must be multiples of ``2 ** (scales - 1)``; a window smaller than that along an
        axis must span the whole image along it.
        """
        # The coarsest scale pools by 2**(scales-1); smaller inputs are replicate-padded up to that and cropped back.
        height, width = rainy.shape[2:]
        need = 2 ** (self.scales - 1)
        o = rainy
        if height < need or width < need:
            o = F.pad(rainy, [0, max(0, need - width), 0, max(0, need - height)], mode="replicate")
        n, _, hp, wp = o.shape
        grid = None if placement is None else self._grid(placement, height, width)
        state = []
        for i in range(self.scales):
            f = 2 ** (self.scales - 1 - i)
            h = o.new_zeros(n, self.channels, hp // f, wp // f)
            state.append((h, torch.zeros_like(h)))
        x = o
        outputs = []
        for _ in range(self.stages):
            feats, state = self.body(torch.cat([o, x], 1), state, placement=grid)
            x = o - self.body_end(feats)
            outputs.append(x[:, :, :height, :width])
        return DerainOutput(image=outputs[-1], stages=tuple(outputs))

    def _grid(self, placement: Placement, height: int, width: int) -> tuple[int, int, int, int]:
        """``(image_height, image_width, top, left)`` of the padded window in the input the whole-image forward
        sees (the image, replicate-padded like a window when it is smaller than the coarsest pooling)."""
        need = 2 ** (self.scales - 1)
        full_h, full_w, top, left = placement.image_height, placement.image_width, placement.top, placement.left
        for name, start, size, full in (("top", top, height, full_h), ("left", left, width, full_w)):
            if start < 0 or start % need or start + size > full:
                raise ValueError(f"placement {name}={start} of a {size}-pixel window in a {full}-pixel image: "
                                 f"it must be a multiple of {need} with the window inside the image")
            if size < need and size != full:
                raise ValueError(f"a window {size} pixels across must span the whole image ({full} pixels)")
        return max(full_h, need), max(full_w, need), top, left


def _detect(sd: StateDict) -> Detected | None:
    """SIAN's official layout: channels, scales and DoG layers from the shapes."""
    w = sd.get("body.tran_conv.weight")
    if w is None:
        return None
    scales = len({k.split(".")[2] for k in sd if k.startswith("body.scale_conv.")})
    dog = sd.get("body.scale_conv.0.conv_m.0.weight")
    options: dict[str, Any] = {}
    if int(w.shape[0]) != 32:
        options["channels"] = int(w.shape[0])
    if scales != 3:
        options["scales"] = scales
    if dog is not None and int(dog.shape[1]) // int(w.shape[0]) + 1 != 6:
        options["gaussian_layers"] = int(dog.shape[1]) // int(w.shape[0]) + 1
    return Detected("sian", options)


FAMILY = Family(
    name="sian",
    presets=(Preset("sian", SIAN, {}, "SIAN (ACM MM 2020): 6 shared stages, DoG attention, ConvLSTM per scale"),),
    # With a 96-pixel overlap tiled outputs equal the untiled ones within 2/255 (windows are told where they sit).
    overlap=96, bytes_per_pixel=3500.0, align=4,  # pools by 2 and 4
    small={"stages": 2, "channels": 8},
    detect=_detect, layout="body.tran_conv...",
)
