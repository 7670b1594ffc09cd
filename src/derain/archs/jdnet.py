"""JDNet — joint self-attention, scale aggregation and self-calibrated convolution (Wang et al., ACM MM 2020).

Official class ``ODE_DerainNet`` (Ohraincu/JDNet, ``code/base/*/config/model.py``; Wang et al., ACM MM 2020):
a 3x3 entry convolution, 32 *joint units* chained with dense 1x1 fusion (unit i sees the previous fused output;
the fusion after it sees the entry features and every unit output so far), a 3x3 exit convolution followed by a
LeakyReLU that predicts the rain layer R, and the output ``O - R``. A joint unit is

    x <- x + conv(lrelu(bn2(SAM(lrelu(bn1(x))))))     pairwise self-attention bottleneck (7x7, reflection padding)
    f  = conv11(concat[x, up(r1), up(r2), up(r3), up(r4)])   r_i: cascaded stride-2 residual blocks, nearest up
    y  = SCBottleneck(f + x)                               self-calibrated convolution, pooling r = 4

Every activation is LeakyReLU(0.2); there is BatchNorm in the attention bottleneck only. Module names reproduce the
official state_dict keys (after stripping DataParallel's ``module.``). Ablations (jdnet.md §4): ``attention=False,
calibrated=False`` is R1 (scale aggregation only, the unit returns ``f + x``), ``attention=False`` alone is R2.

Input and output keep the network's channel order (BGR for official weights); outputs are not clamped. Any size
works as in the official code (stride-2 levels round up, up-sampling goes back to the exact size) as long as height
and width are at least 4, which the reflection padding and the 4x4 average pooling need; the official code fails
below that, here such inputs are replicate-padded to 4 inside the model and cropped back.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from derain.archs.spec import Detected, Family, Preset, StateDict
from derain.errors import WeightsError
from derain.nn.dense import DenseBuffer, dense_fuse
from derain.nn.pairwise import PairwiseSelfAttention
from derain.types import DerainOutput

_MIN_SIZE = 4

PRESETS: dict[str, dict[str, bool]] = {
    "jdnet": {},
    "jdnet_r1": {"attention": False, "calibrated": False},
    "jdnet_r2": {"attention": False},
}


def _lrelu() -> nn.LeakyReLU:
    return nn.LeakyReLU(0.2)


def _conv3(in_ch: int, out_ch: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, kernel_size=3, stride=stride, padding=1)


def _plus_nearest_up(full: Tensor, part: Tensor, *, inplace: bool = False) -> Tensor:
    """``full + interpolate(part, size=full's, mode="nearest")``. When the size is a whole multiple f of part's, the
    nearest up-sampling repeats each pixel f x f times: the sum is a broadcast over (h, f, w, f) views of ``full``,
    with no up-sampled copy of ``part`` (and a summing backward); ``inplace`` adds into ``full``. Other sizes use
    ``F.interpolate`` (so does export, whose sizes are symbolic)."""
    (n, c, height, width), (h, w) = full.shape, part.shape[2:]
    f = height // h
    if not torch.compiler.is_compiling() and height == f * h and width == f * w:
        if full.is_contiguous():
            grid, spread = full.view(n, c, h, f, w, f), part[:, :, :, None, :, None]
        elif full.is_contiguous(memory_format=torch.channels_last):
            grid = full.permute(0, 2, 3, 1).view(n, h, f, w, f, c)
            spread = part.permute(0, 2, 3, 1)[:, :, None, :, None]
        else:
            grid = None
        if grid is not None:
            if inplace:
                grid.add_(spread)
                return full
            out = grid + spread
            return out.view(n, c, height, width) if full.is_contiguous() else out.view(n, height, width, c).permute(
                0, 3, 1, 2)
    up = F.interpolate(part, size=(height, width), mode="nearest")
    return full.add_(up) if inplace else full + up


class ResidualBlock(nn.Module):
    """``Residual_Block(stride=2)``: c = lrelu(conv_s2(x)); c + conv(lrelu(conv(c)))."""

    def __init__(self, *, channels: int, stride: int = 2) -> None:
        super().__init__()
        self.convert = nn.Sequential(_conv3(channels, channels, stride), _lrelu())
        self.res = nn.Sequential(_conv3(channels, channels), _lrelu(), _conv3(channels, channels))

    def forward(self, x: Tensor) -> Tensor:
        c = self.convert(x)
        return c + self.res(c)


class SCConv(nn.Module):
    """Self-calibration: k4(k3(u) * sigmoid(u + nearest_up(k2(avgpool_r(u)))))."""

    def __init__(self, *, channels: int, pooling: int = 4) -> None:
        super().__init__()
        self.k2 = nn.Sequential(nn.AvgPool2d(pooling, stride=pooling), _conv3(channels, channels))
        self.k3 = nn.Sequential(_conv3(channels, channels))
        self.k4 = nn.Sequential(_conv3(channels, channels), _lrelu())

    def forward(self, u: Tensor) -> Tensor:
        gate = torch.sigmoid(_plus_nearest_up(u, self.k2(u)))
        return self.k4(self.k3(u) * gate)


class SCBottleneck(nn.Module):
    """Two half-width branches (plain 3x3, self-calibrated), 1x1 fusion, identity, LeakyReLU."""

    def __init__(self, *, channels: int, pooling: int = 4) -> None:
        super().__init__()
        half = channels // 2
        self.conv1_a = nn.Conv2d(channels, half, kernel_size=1)
        self.k1 = nn.Sequential(_conv3(half, half), _lrelu())
        self.conv1_b = nn.Conv2d(channels, half, kernel_size=1)
        self.scconv = SCConv(channels=half, pooling=pooling)
        self.conv3 = nn.Conv2d(2 * half, 2 * half, kernel_size=1)
        self.relu = _lrelu()

    def forward(self, x: Tensor) -> Tensor:
        a = self.k1(self.relu(self.conv1_a(x)))
        b = self.scconv(self.relu(self.conv1_b(x)))
        return self.relu(self.conv3(torch.cat([a, b], dim=1)) + x)


class AttentionBottleneck(nn.Module):
    """SAN's bottleneck with JDNet's LeakyReLU: x + conv(lrelu(bn2(SAM(lrelu(bn1(x))))))."""

    def __init__(self, *, channels: int, kernel_size: int = 7, chunk_rows: int | None = None) -> None:
        super().__init__()
        mid = channels // 4
        self.bn1 = nn.BatchNorm2d(channels)
        self.sam = PairwiseSelfAttention(in_channels=channels, rel_channels=channels // 16, out_channels=mid,
                                         share_channels=8, kernel_size=kernel_size, chunk_rows=chunk_rows)
        self.bn2 = nn.BatchNorm2d(mid)
        self.conv = nn.Conv2d(mid, channels, kernel_size=1)
        self.relu = _lrelu()

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn2(self.sam(self.relu(self.bn1(x)))))
        return self.conv(out) + x


class JointUnit(nn.Module):
    """``Scale_attention`` (scale_attention=False, as in every shipped config): SAN -> scale aggregation -> SC."""

    def __init__(self, *, channels: int, scales: int = 4, attention: bool = True, calibrated: bool = True,
                 kernel_size: int = 7, chunk_rows: int | None = None) -> None:
        super().__init__()
        self.res_list = nn.ModuleList(ResidualBlock(channels=channels) for _ in range(scales))
        self.san = AttentionBottleneck(channels=channels, kernel_size=kernel_size,
                                       chunk_rows=chunk_rows) if attention else None
        self.conv11 = nn.Sequential(nn.Conv2d((scales + 1) * channels, channels, kernel_size=1), _lrelu())
        self.scn = SCBottleneck(channels=channels) if calibrated else None

    def forward(self, x: Tensor) -> Tensor:
        if self.san is not None:
            x = self.san(x)
        # conv11 is a 1x1 convolution over concat[x, up(r1), ..., up(r4)]: split into one 1x1 per level, and since a
        # 1x1 convolution commutes with nearest up-sampling, each level's is applied at its own (small) resolution.
        # Same sums as the official cat-then-convolve, without the (scales+1)*C-channel full-size tensor.
        conv, channels, grad = self.conv11[0], x.shape[1], torch.is_grad_enabled()
        assert isinstance(conv, nn.Conv2d)
        fused = F.conv2d(x, conv.weight[:, :channels], conv.bias)
        t = x
        for level, block in enumerate(self.res_list, start=1):
            t = block(t)
            part = F.conv2d(t, conv.weight[:, level * channels:(level + 1) * channels])
            fused = _plus_nearest_up(fused, part, inplace=not grad)  # in place on a view costs autograd a copy
        fused = self.conv11[1](fused) + x
        return self.scn(fused) if self.scn is not None else fused


class DenseConnection(nn.Module):
    """The chain of joint units, each followed by a 1x1 fusion of the entry features and all unit outputs."""

    def __init__(self, *, channels: int, units: int, scales: int, attention: bool, calibrated: bool,
                 kernel_size: int, chunk_rows: int | None) -> None:
        super().__init__()
        self.units = nn.ModuleList(
            JointUnit(channels=channels, scales=scales, attention=attention, calibrated=calibrated,
                      kernel_size=kernel_size, chunk_rows=chunk_rows) for _ in range(units))
        self.conv1x1 = nn.ModuleList(
            nn.Sequential(nn.Conv2d((i + 2) * channels, channels, kernel_size=1), _lrelu()) for i in range(units))
        self.reference = False  # True: the concatenating formulation (tests and benchmarks compare against it)

    def forward(self, x: Tensor) -> Tensor:
        if self.reference:
            return self.concatenating(x)
        # Every unit output is written once into one pixels x channels buffer and each 1x1 fusion is a matrix product
        # with a channel prefix of it, forward and backward (derain.nn.dense) -- instead of concatenating a growing
        # list of feature maps 32 times, which moves O(units^2) feature maps through memory.
        state = DenseBuffer(x, len(self.units))
        out = x
        for i, (unit, fuse) in enumerate(zip(self.units, self.conv1x1, strict=True)):
            conv = fuse[0]
            assert isinstance(conv, nn.Conv2d) and conv.bias is not None
            out = fuse[1](dense_fuse(unit(out), x, conv.weight, conv.bias, state, i))  # NCHW view, channels_last
        return out

    def concatenating(self, x: Tensor) -> Tensor:
        """The official formulation (``torch.cat`` of the growing feature list, then the 1x1 fusion)."""
        features, out = [x], x
        for unit, fuse in zip(self.units, self.conv1x1, strict=True):
            features.append(unit(out))
            out = fuse(torch.cat(features, dim=1))
        return out


class JDNet(nn.Module):
    """``ODE_DerainNet``. Defaults are the released configuration (4,681,859 parameters).

    ``chunk_rows`` bounds the memory of the attention's k*k-footprint tensors (rows per band; ``None``: automatic).
    """

    def __init__(self, *, channels: int = 32, units: int = 32, scales: int = 4, attention: bool = True,
                 calibrated: bool = True, kernel_size: int = 7, chunk_rows: int | None = None) -> None:
        super().__init__()
        if channels % 32:
            raise ValueError(f"channels must be a multiple of 32 (the attention uses channels/16 relation and "
                             f"channels/4 value channels in groups of 8), got {channels}")
        if units < 1 or scales < 0:
            raise ValueError(f"need units >= 1 and scales >= 0, got units={units}, scales={scales}")
        self.min_size = _MIN_SIZE if (attention or calibrated) else 1
        self.enterBlock = nn.Sequential(_conv3(3, channels), _lrelu())  # official key name
        self.derain_net = DenseConnection(channels=channels, units=units, scales=scales, attention=attention,
                                          calibrated=calibrated, kernel_size=kernel_size, chunk_rows=chunk_rows)
        self.exitBlock = nn.Sequential(_conv3(channels, 3), _lrelu())  # official key name

    def forward(self, x: Tensor) -> DerainOutput:
        height, width = x.shape[2:]
        short_h, short_w = max(0, self.min_size - height), max(0, self.min_size - width)
        inp = F.pad(x, (0, short_w, 0, short_h), mode="replicate") if short_h or short_w else x
        rain = self.exitBlock(self.derain_net(self.enterBlock(inp)))
        image = (inp - rain)[:, :, :height, :width]
        return DerainOutput(image=image, stages=(image,), attention=())


def _export_form(model: nn.Module) -> None:
    for module in model.modules():
        if isinstance(module, PairwiseSelfAttention):
            module.export_mode = True  # the whole image as one band, footprints from a one-hot convolution
        if isinstance(module, DenseConnection):
            module.reference = True  # plain Concat + Conv nodes instead of a Python autograd function


def use_reference(model: nn.Module, on: bool = True) -> None:
    """Train through the plain autograd formulations (concatenating dense fusion, attention differentiated window
    by window) instead of the hand-written backward passes: same values and gradients, slower (benchmarks, tests)."""
    for module in model.modules():
        if isinstance(module, DenseConnection):
            module.reference = on
        if isinstance(module, PairwiseSelfAttention):
            module.reference_backward = on


_SUMMARIES = {
    "jdnet": "JDNet (ACM MM 2020): 32 joint units, 7x7 pairwise attention",
    "jdnet_r1": "JDNet ablation R1: scale aggregation only",
    "jdnet_r2": "JDNet ablation R2: scale aggregation + SC conv",
}


def _detect(sd: StateDict) -> Detected | None:
    """JDNet's official layout: which ablation, and its width, units and scales."""
    w = sd.get("enterBlock.0.weight")
    if w is None or "exitBlock.0.weight" not in sd:
        return None
    units = len({k.split(".")[2] for k in sd if k.startswith("derain_net.units.")})
    scales = len({k.split(".")[4] for k in sd if k.startswith("derain_net.units.0.res_list.")})
    attention = "derain_net.units.0.san.conv.weight" in sd
    calibrated = "derain_net.units.0.scn.conv3.weight" in sd
    name = "jdnet" if attention else ("jdnet_r2" if calibrated else "jdnet_r1")
    if attention and not calibrated:
        raise WeightsError("JDNet-layout checkpoint with self-attention but without the self-calibrated convolution "
                           "(no derain_net.units.0.scn.*): no JDNet variant has that combination")
    options: dict[str, Any] = {}
    if int(w.shape[0]) != 32:
        options["channels"] = int(w.shape[0])
    if units != 32:
        options["units"] = units
    if scales != 4:
        options["scales"] = scales
    # JDNet's official code reads images with cv2 and never converts them: BGR.
    return Detected(name, options, channel_order="bgr")


FAMILY = Family(
    name="jdnet",
    presets=tuple(Preset(name, JDNet, options, _SUMMARIES[name]) for name, options in PRESETS.items()),
    # Stride-16 levels in 32 units see the whole image: the overlap keeps tiling changes small, not zero.
    overlap=128, bytes_per_pixel=5500.0, align=16,
    small={"units": 2},  # the attention needs channels in multiples of 32
    export_form=_export_form,
    detect=_detect, layout="enterBlock.0..., derain_net.units...",
)
