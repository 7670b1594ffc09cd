"""SPANet — spatial attentive network (Wang et al., CVPR 2019).

Follows the official code (stevewongv/SPANet ``SPANet.py``; Wang et al., CVPR 2019): a 3x3 entry convolution,
17 residual bottlenecks (1x1, dilated 3x3, 1x1; no biases), and one spatial attentive module (SAM) shared by the
four groups of three blocks after the third: each group first recomputes the attention mask from the current
features and then uses ``f = relu(block(f) * mask + f)``. A SAM is two IRNN layers (four directional ReLU
recurrences each, :mod:`derain.nn.irnn`) between 3x3 convolutions, ending in a sigmoid mask. The output is the clean
image itself (no ``O - R`` residual), not clamped.

The SAM's direction-attention branch (``SAM1.attention_layer``) has no effect in the official code: its four maps
are multiplied into the IRNN outputs by a non-in-place ``mul`` whose result is discarded, and the released
checkpoint shows it never received a gradient. It is kept so that checkpoints load strictly and skipped in the
forward pass; ``direction_attention=True`` applies it as the paper describes (incompatible with released weights).

Input and output keep the network's channel order (BGR for the official weights). Any size works (no
down-sampling). ``attention`` in the output holds the four masks in order; the first is the one the official
attention loss supervises.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from derain.archs.spec import Detected, Family, Preset, StateDict
from derain.nn.irnn import IRNN, Method
from derain.types import DerainOutput


def _conv3(in_ch: int, out_ch: int, *, dilation: int = 1, bias: bool = False) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, kernel_size=3, padding=dilation, dilation=dilation, bias=bias)


def _conv1(in_ch: int, out_ch: int, *, bias: bool = False) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, kernel_size=1, bias=bias)


class Bottleneck(nn.Module):
    """``res_block``: 1x1, ReLU, 3x3 dilated by 2, ReLU, 1x1; the skip and the final ReLU live in the network."""

    def __init__(self, *, channels: int = 32, dilation: int = 2) -> None:
        super().__init__()
        self.group1 = nn.Sequential(OrderedDict([
            ("conv1", _conv1(channels, channels)),
            ("relu1", nn.ReLU()),
            ("conv2", _conv3(channels, channels, dilation=dilation)),
            ("relu2", nn.ReLU()),
            ("conv3", _conv1(channels, channels)),
        ]))

    def forward(self, x: Tensor) -> Tensor:
        g = self.group1  # the ReLUs in place on the convolutions' fresh outputs: same values, fewer buffers
        return g.conv3(F.relu(g.conv2(F.relu(g.conv1(x), inplace=True)), inplace=True))


class DirectionAttention(nn.Module):
    """Four sigmoid maps (up, right, down, left) from the SAM input; inert in the official forward pass."""

    def __init__(self, *, channels: int = 32) -> None:
        super().__init__()
        self.conv1 = _conv3(channels, 16, bias=True)
        self.conv2 = _conv3(16, 16, bias=True)
        self.conv3 = _conv1(16, 4, bias=True)

    def forward(self, x: Tensor) -> Tensor:
        return torch.sigmoid(self.conv3(F.relu(self.conv2(F.relu(self.conv1(x))))))


class SAM(nn.Module):
    """Spatial attentive module: conv, IRNN, conv, IRNN, conv, ReLU, 1x1, sigmoid -> a ``(B, 1, H, W)`` mask."""

    def __init__(self, *, channels: int = 32, boundary_relu: bool = True, irnn_method: Method = "scan",
                 direction_attention: bool = False) -> None:
        super().__init__()
        self.direction_attention = direction_attention
        self.irnn1 = IRNN(channels=channels, boundary_relu=boundary_relu, method=irnn_method)
        self.irnn2 = IRNN(channels=channels, boundary_relu=boundary_relu, method=irnn_method)
        self.conv_in = _conv3(channels, channels)
        self.conv2 = _conv3(4 * channels, channels)
        self.conv3 = _conv3(4 * channels, channels)
        self.attention_layer = DirectionAttention(channels=channels)
        if not direction_attention:  # inert, kept for the official keys: frozen, so no optimizer or DDP waits on it
            self.attention_layer.requires_grad_(False)
        self.conv_out = _conv1(channels, 1)

    def _directions(self, irnn: IRNN, x: Tensor, maps: Tensor | None) -> Tensor:
        if maps is None:
            return irnn.forward_concat(x)  # concat[up, right, down, left]
        # paper mode: channel 0 weights up, 1 right, 2 down, 3 left
        return torch.cat([p * maps[:, i:i + 1] for i, p in enumerate(irnn(x))], dim=1)

    def forward(self, x: Tensor) -> Tensor:
        maps = self.attention_layer(x) if self.direction_attention else None
        out = self.conv2(self._directions(self.irnn1, self.conv_in(x), maps))
        out = F.relu(self.conv3(self._directions(self.irnn2, out, maps)))
        return torch.sigmoid(self.conv_out(out))


class SPANet(nn.Module):
    """The official ``SPANet`` (283,716 parameters).

    ``boundary_relu``: whether the first element of every IRNN sweep goes through the ReLU (True: the CUDA kernel of
    the official repository at HEAD; False: the pure-PyTorch IRNN committed together with the released checkpoint).
    ``irnn_method``: ``"scan"`` (fast) or ``"loop"`` (reference); same values up to rounding.
    """

    GROUPS = ((3, 4, 5), (6, 7, 8), (9, 10, 11), (12, 13, 14))  # blocks (0-based) gated by masks A1..A4

    def __init__(self, *, channels: int = 32, boundary_relu: bool = True, irnn_method: Method = "scan",
                 direction_attention: bool = False) -> None:
        super().__init__()
        self.conv_in = nn.Sequential(_conv3(3, channels), nn.ReLU())
        self.SAM1 = SAM(channels=channels, boundary_relu=boundary_relu, irnn_method=irnn_method,
                        direction_attention=direction_attention)
        for i in range(1, 18):
            setattr(self, f"res_block{i}", Bottleneck(channels=channels))
        self.conv_out = nn.Sequential(_conv3(channels, 3))

    def _block(self, index: int) -> Bottleneck:
        return getattr(self, f"res_block{index + 1}")

    def forward(self, x: Tensor) -> DerainOutput:
        # f = relu(block(f) [* mask] + f), the sums and ReLUs in place where autograd does not need the operands
        # (without autograd, the block's fresh output takes the sum)
        fresh = not torch.is_grad_enabled()

        def step(f: Tensor, index: int, mask: Tensor | None = None) -> Tensor:
            y = self._block(index)(f)
            if mask is not None:
                y = y.mul_(mask) if fresh else y * mask
            return F.relu(y.add_(f) if fresh or mask is not None else y + f, inplace=True)

        f = F.relu(self.conv_in[0](x), inplace=True)
        for i in range(3):
            f = step(f, i)
        masks = []
        for group in self.GROUPS:
            mask = self.SAM1(f)
            masks.append(mask)
            for i in group:
                f = step(f, i, mask)
        for i in (15, 16):
            f = step(f, i)
        image = self.conv_out(f)
        return DerainOutput(image=image, stages=(image,), attention=tuple(masks))


def _export_form(model: nn.Module) -> None:
    try:  # the sweeps as two scan ops, which export as ONNX Scan nodes running the plain recurrence
        from torch._higher_order_ops.scan import scan  # noqa: F401
        method = "export"
    except ImportError:  # an older torch: the doubling scan (13 whole-tensor steps; slow in ONNX Runtime)
        method = "doubling"
    for module in model.modules():
        if isinstance(module, IRNN):
            module.method = method


def _detect(sd: StateDict) -> Detected | None:
    """SPANet's official layout (BGR, as its code reads images with cv2)."""
    w = sd.get("conv_in.0.weight")
    if w is None or "SAM1.irnn1.up_weight.weight" not in sd:
        return None
    channels = int(w.shape[0])
    # The official weights were trained on cv2 (BGR) images, as every SPANet-layout file from its code.
    return Detected("spanet", {"channels": channels} if channels != 32 else {}, channel_order="bgr")


FAMILY = Family(
    name="spanet",
    presets=(Preset("spanet", SPANet, {}, "SPANet (CVPR 2019): spatial attentive module, four-directional IRNN"),),
    # The IRNN sweeps span whole rows and columns: the overlap keeps tiling changes small, not zero.
    overlap=128, bytes_per_pixel=2600.0,
    small={"channels": 8},
    export_form=_export_form,
    detect=_detect, layout="conv_in.0..., SAM1.irnn1...",
)
