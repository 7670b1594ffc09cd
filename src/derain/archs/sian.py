"""SIAN — scale-space invariant attention network (Pang et al., ACM MM 2020; official name RPDNet).

Six weight-shared stages. Each stage takes ``concat[O, X_{t-1}]``, builds a difference-of-Gaussian pyramid on its
features (3 octaves x 5 DoG layers), gates average-pooled features (1/4, 1/2, 1) with a sigmoid attention computed
from the DoG of the same scale, carries one ConvLSTM per scale from stage to stage, fuses coarse to fine and
predicts the rain layer ``R_t``; the stage output is ``X_t = O - R_t``. Follows the official code
(``../shared/specs/sian.md``); module names reproduce the official state_dict keys (including the unused
``body.conv_m`` block, kept so the released checkpoints load strictly).

Input and output are RGB in [0, 1]; outputs are not clamped.
"""

from __future__ import annotations

import itertools
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from derain.types import DerainOutput

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

    def forward(self, fine: Tensor, coarse: Tensor) -> Tensor:
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

    def forward(self, z: Tensor, state: list[tuple[Tensor, Tensor]]) -> tuple[Tensor, list[tuple[Tensor, Tensor]]]:
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
            y = self.up_conv[i - 1](hidden[i], y)
        return y, new_state


class SIAN(nn.Module):
    """Scale-space invariant attention network; ``forward`` returns every stage's estimate."""

    def __init__(self, *, stages: int = 6, channels: int = 32, scales: int = 3, gaussian_layers: int = 6) -> None:
        super().__init__()
        if stages < 1 or scales < 1 or gaussian_layers < 5:
            raise ValueError("SIAN needs stages >= 1, scales >= 1 and gaussian_layers >= 5")
        self.stages = stages
        self.channels = channels
        self.scales = scales
        self.body = RPDBlock(channels=channels, scales=scales, gaussian_layers=gaussian_layers)
        self.body_end = nn.Sequential(ResBlock(channels=channels), ResBlock(channels=channels), _conv(channels, 3))

    def forward(self, rainy: Tensor) -> DerainOutput:
        # The coarsest scale pools by 2**(scales-1); smaller inputs are replicate-padded up to that and cropped back.
        height, width = rainy.shape[2:]
        need = 2 ** (self.scales - 1)
        o = rainy
        if height < need or width < need:
            o = F.pad(rainy, [0, max(0, need - width), 0, max(0, need - height)], mode="replicate")
        n, _, hp, wp = o.shape
        state = []
        for i in range(self.scales):
            f = 2 ** (self.scales - 1 - i)
            h = o.new_zeros(n, self.channels, hp // f, wp // f)
            state.append((h, torch.zeros_like(h)))
        x = o
        outputs = []
        for _ in range(self.stages):
            feats, state = self.body(torch.cat([o, x], 1), state)
            x = o - self.body_end(feats)
            outputs.append(x[:, :, :height, :width])
        return DerainOutput(image=outputs[-1], stages=tuple(outputs))
