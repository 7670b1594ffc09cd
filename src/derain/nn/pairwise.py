"""Pairwise self-attention over a k x k footprint (SAN's ``SAM`` with ``sa_type=0``, as modified by JDNet).

For every pixel p and footprint position j (the k*k neighbours N_j(p), row-major, reflection-padded borders):

    relation  r[c, j, p] = q[c, p] - k[c, N_j(p)]              q = conv1(x), k = conv2(x)   (subtraction)
    position  e[c, j, p] = pe[c, p] - pe[c, N_j(p)]            pe = conv_p(grid), grid = (x, y) in [-1, 1]
    weights   a[:, :, p] = softmax_j(conv_w(concat[r, e]))     conv_w = LeakyReLU(0.2), 1x1 (no bias), 1x1
    output    y[c, p]    = sum_j a[c mod Cw, j, p] * v[c, N_j(p)]   v = conv3(x), Cw = out / share weight maps

The official code runs CuPy CUDA kernels (``subtraction_refpad``, ``subtraction2_refpad``, ``aggregation_refpad``);
here the footprint is read as k*k shifted windows of a reflection-padded tensor, which is the same computation.
Training differentiates it through a hand-written backward (:class:`_PairwiseBand`); ``reference_backward=True``
lets autograd differentiate the windows one by one instead (same gradients, slower; the tests compare the two). The
relation and weight tensors hold k*k values per pixel, so images are processed in horizontal bands of rows
(``chunk_rows``; the result does not depend on it). Training keeps every band's relation and weights for the
backward pass: its memory grows with k*k times the feature size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# Elements allowed in one band's largest k*k-footprint tensor (16 MB in float32) when chunk_rows is None and no
# gradient is tracked (inference). Smaller bands keep each of the k*k passes over a band in cache: measured on a
# 2-core CPU at 480x320, a 16-row band (3M values) ran the attention 2.5x faster than the whole image in one band
# (64M) (benchmarks/forward.py).
_BAND_BUDGET = 1 << 22
# The budget when gradients are tracked (training). There every band's relation and weights are kept for the
# backward pass whatever the band size, so bands only add per-band work: a 12x64x64 JDNet training step took 6.7 s
# at 2**22 values per band (5 bands of 13 rows), 6.6 s at 2**23, 6.2-6.3 s at 2**24 and 6.0-6.1 s at 2**25 and
# above (one band) on a 2-core CPU (benchmarks/train_step.py, one run).
_TRAIN_BAND_BUDGET = 1 << 25


def position_grid(height: int, width: int, *, dtype: torch.dtype, device: torch.device) -> Tensor:
    """``(1, 2, H, W)``: channel 0 the x coordinate (linspace(-1, 1, W) along the width), channel 1 the y one."""
    xs = torch.linspace(-1.0, 1.0, width, dtype=dtype, device=device).view(1, width).expand(height, width)
    ys = torch.linspace(-1.0, 1.0, height, dtype=dtype, device=device).view(height, 1).expand(height, width)
    return torch.stack([xs, ys]).unsqueeze(0)


def _traceable_grid(height: int, width: int, *, dtype: torch.dtype, device: torch.device) -> Tensor:
    """:func:`position_grid` from ``arange`` (``linspace`` fixes its length when exported; equal up to rounding)."""

    def axis(n: int) -> Tensor:
        return torch.arange(n, dtype=dtype, device=device) * (2.0 / max(n - 1, 1)) - 1.0

    xs = axis(width).view(1, width).expand(height, width)
    ys = axis(height).view(height, 1).expand(height, width)
    return torch.stack([xs, ys]).unsqueeze(0)


def _windows(size: int) -> list[tuple[int, int]]:
    """The footprint positions (dy, dx), row-major as the official kernels."""
    return [divmod(j, size) for j in range(size * size)]


def _channel_mix(matrix: Tensor, x: Tensor) -> Tensor:
    """``matrix`` (O, C) applied over the channels of ``x`` (B, C, N) -> (B, O, N), as C multiply-adds: the
    attention mixes 2-4 channels into 1-2 maps, where a matrix product spends its time reshaping its operands."""
    out = x[:, :1] * matrix[:, 0].view(1, -1, 1)
    for c in range(1, x.shape[1]):
        out.addcmul_(x[:, c:c + 1], matrix[:, c].view(1, -1, 1))
    return out


def _channel_products(g: Tensor, x: Tensor) -> Tensor:
    """``sum over b, n of g[b, o, n] * x[b, c, n]`` -> (O, C): the gradient of :func:`_channel_mix`'s matrix."""
    return torch.stack([torch.stack([torch.mul(g[:, o], x[:, c]).sum() for c in range(x.shape[1])])
                        for o in range(g.shape[1])])


class _PairwiseBand(torch.autograd.Function):
    """One band of the attention with a hand-written backward: the same sums as :meth:`PairwiseSelfAttention._band`
    under autograd (the tests compare the gradients), without autograd's per-window bookkeeping.

    Autograd differentiates each of the k*k shifted windows on its own: every window's gradient is a zero tensor the
    size of the padded input with the window copied in, then summed -- 2*k*k full-size fills, copies and additions
    per attention, which cost more than the arithmetic. Here each window's gradient is added in place into one
    buffer, the relation and weight tensors are written once into preallocated storage, and the backward keeps only
    the relation differences and the softmax weights.
    """

    @staticmethod
    def forward(ctx, q: Tensor, k_pad: Tensor, v_pad: Tensor, pe: Tensor, pe_pad: Tensor, mix: Tensor,
                bias: Tensor, size: int, r0: int, r1: int) -> Tensor:
        batch, rel, _, width = q.shape
        span, windows = r1 - r0, _windows(size)
        taps = len(windows)

        def differences(t: Tensor, padded: Tensor) -> Tensor:  # (B, C, k*k, span, W): centre minus neighbour
            out = t.new_empty(t.shape[0], t.shape[1], taps, span, width)
            centre = t[:, :, r0:r1]
            for j, (dy, dx) in enumerate(windows):
                torch.sub(centre, padded[:, :, r0 + dy:r1 + dy, dx:dx + width], out=out[:, :, j])
            return out

        relation, position = differences(q, k_pad), differences(pe, pe_pad)
        logits = _channel_mix(mix[:, :rel], F.leaky_relu(relation, 0.2).view(batch, rel, -1))
        logits += _channel_mix(mix[:, rel:], F.leaky_relu(position, 0.2).view(1, position.shape[1], -1))
        logits += bias.view(1, -1, 1)
        weights = torch.softmax(logits.view(batch, -1, taps, span * width), dim=2).view(batch, 1, -1, taps, span, width)
        maps = weights.shape[2]
        groups = v_pad.shape[1] // maps
        out = v_pad.new_zeros(batch, groups, maps, span, width)
        for j, (dy, dx) in enumerate(windows):
            window = v_pad[:, :, r0 + dy:r1 + dy, dx:dx + width]
            out.addcmul_(window.view(batch, groups, maps, span, width), weights[:, :, :, j])
        ctx.save_for_backward(v_pad, mix, relation, position, weights)
        ctx.geometry = (size, r0, r1, tuple(q.shape), tuple(k_pad.shape), tuple(pe.shape), tuple(pe_pad.shape))
        return out.view(batch, v_pad.shape[1], span, width)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, ...]:
        v_pad, mix, relation, position, weights = ctx.saved_tensors
        size, r0, r1, q_shape, k_shape, pe_shape, pe_pad_shape = ctx.geometry
        batch, _, maps, taps, span, width = weights.shape
        rel, groups = relation.shape[1], v_pad.shape[1] // maps
        windows = _windows(size)
        grad = grad.contiguous().view(batch, groups, maps, span, width)

        # aggregation out = sum_j window_j * w_j: d/dw_j = sum over the groups of grad * window_j,
        # d/dwindow_j = grad * w_j
        grad_weights = weights.new_empty(batch, maps, taps, span, width)
        grad_v = torch.zeros_like(v_pad) if ctx.needs_input_grad[2] else None
        for j, (dy, dx) in enumerate(windows):
            window = v_pad[:, :, r0 + dy:r1 + dy, dx:dx + width].view(batch, groups, maps, span, width)
            torch.sum(grad * window, dim=1, out=grad_weights[:, :, j])
            if grad_v is not None:
                target = grad_v[:, :, r0 + dy:r1 + dy, dx:dx + width].view(batch, groups, maps, span, width)
                target.addcmul_(grad, weights[:, :, :, j])
        # softmax over the footprint
        w = weights.view(batch, maps, taps, span, width)
        grad_logits = w * (grad_weights - (w * grad_weights).sum(2, keepdim=True))
        grad_logits = grad_logits.view(batch, maps, -1)  # (B, Cw, k*k*n)
        grad_bias = grad_logits.sum((0, 2))

        def through(diff: Tensor, part: Tensor, summed: bool) -> tuple[Tensor, Tensor]:
            """Gradients of ``mix`` columns ``part`` and of the differences ``diff`` (pre-LeakyReLU)."""
            g = grad_logits.sum(0, keepdim=True) if summed else grad_logits  # position: batch 1, broadcast
            flat = diff.view(diff.shape[0], diff.shape[1], -1)
            grad_mix = _channel_products(g, F.leaky_relu(flat, 0.2))
            grad_act = _channel_mix(part.t(), g)
            grad_diff = torch.ops.aten.leaky_relu_backward(grad_act, flat, 0.2, False)  # autograd's own kernel
            return grad_mix, grad_diff.view_as(diff)

        grad_mix_rel, grad_rel = through(relation, mix[:, :rel], False)
        grad_mix_pos, grad_pos = through(position, mix[:, rel:], True)

        def spread(g: Tensor, centre_shape: tuple, padded_shape: tuple) -> tuple[Tensor, Tensor]:
            """d(centre - window_j): +g to the centre rows, -g_j to each window of the padded tensor."""
            centre = g.new_zeros(centre_shape)
            centre[:, :, r0:r1] = g.sum(2)
            padded = g.new_zeros(padded_shape)
            for j, (dy, dx) in enumerate(windows):
                padded[:, :, r0 + dy:r1 + dy, dx:dx + width] -= g[:, :, j]
            return centre, padded

        grad_q, grad_k = spread(grad_rel, q_shape, k_shape)
        grad_pe, grad_pe_pad = spread(grad_pos, pe_shape, pe_pad_shape)
        grad_mix = torch.cat([grad_mix_rel, grad_mix_pos], dim=1)
        return grad_q, grad_k, grad_v, grad_pe, grad_pe_pad, grad_mix, grad_bias, None, None, None


class PairwiseSelfAttention(nn.Module):
    """JDNet's ``SAM``: pairwise (subtraction) self-attention with position encoding, reflection padding.

    Attribute names reproduce the official state_dict keys (``conv1``, ``conv2``, ``conv3``, ``conv_w.1``,
    ``conv_w.2``, ``conv_p``). ``chunk_rows``: rows per band (``None``: chosen from the image size so that a band's
    k*k-footprint tensors stay around 2**22 values).

    ``export_mode`` (set by ``derain export``, off by default): :meth:`_traceable`, the whole image as one band
    and the position grid from ``arange`` (same values up to rounding), so that no Python value depends on the image
    size and the exported graph keeps a dynamic size. It holds the k*k footprints of the whole image at once (no
    bands), so its memory grows with k*k times the feature size.
    """

    export_mode: bool = False
    reference_backward: bool = False  # True: plain autograd through the shifted windows (tests, benchmarks)
    # Training on an accelerator (``None``: whenever gradients are tracked on a non-CPU device) runs the whole-image
    # form of ``export_mode`` under autograd: about twenty large kernels per attention instead of several per
    # footprint position (k*k = 49) and per band, which on a GPU are launch-bound (an H200 shared by four runs took
    # 1.4 s per JDNet training step on the window loop, only four times faster than a 2-core CPU). Its memory, k*k
    # times the features, suits training crops. ``True``/``False`` force it either way (tests compare the two).
    whole_image_training: bool | None = None

    def __init__(self, *, in_channels: int = 32, rel_channels: int = 2, out_channels: int = 8,
                 share_channels: int = 8, kernel_size: int = 7, chunk_rows: int | None = None) -> None:
        super().__init__()
        if out_channels % share_channels or kernel_size % 2 == 0:
            raise ValueError(f"need out_channels divisible by share_channels and an odd kernel_size; got "
                             f"{out_channels}, {share_channels}, {kernel_size}")
        if chunk_rows is not None and chunk_rows < 1:
            raise ValueError(f"chunk_rows must be positive or None, got {chunk_rows}")
        self.kernel_size = kernel_size
        self.chunk_rows = chunk_rows
        self.weight_maps = out_channels // share_channels
        self.conv1 = nn.Conv2d(in_channels, rel_channels, kernel_size=1)
        self.conv2 = nn.Conv2d(in_channels, rel_channels, kernel_size=1)
        self.conv3 = nn.Conv2d(in_channels, out_channels, kernel_size=1)
        self.conv_w = nn.Sequential(
            nn.LeakyReLU(0.2),
            nn.Conv2d(rel_channels + 2, rel_channels, kernel_size=1, bias=False),
            nn.Conv2d(rel_channels, self.weight_maps, kernel_size=1),
        )
        self.conv_p = nn.Conv2d(2, 2, kernel_size=1)

    def band_rows(self, batch: int, height: int, width: int, *, training: bool = False) -> int:
        """Rows per band: ``chunk_rows``, or as many as keep a band's largest footprint tensor within the budget
        (a larger one when gradients are tracked, ``training``)."""
        if self.chunk_rows is not None:
            return self.chunk_rows
        per_row = batch * self.kernel_size**2 * width * max(self.conv3.out_channels, self.conv_w[1].in_channels)
        budget = _TRAIN_BAND_BUDGET if training else _BAND_BUDGET
        return max(1, min(height, budget // max(per_row, 1)))

    def forward(self, x: Tensor) -> Tensor:
        batch, _, height, width = x.shape
        pad = self.kernel_size // 2
        if min(height, width) <= pad:
            raise ValueError(f"reflection padding by {pad} needs height and width > {pad}, got {height}x{width}")
        # plain NCHW: the k*k shifted windows below are then row slices of contiguous maps
        q, k, v = (conv(x).contiguous() for conv in (self.conv1, self.conv2, self.conv3))
        grid = _traceable_grid if self.export_mode else position_grid
        pe = self.conv_p(grid(height, width, dtype=x.dtype, device=x.device))
        k_pad, v_pad, pe_pad = (F.pad(t, (pad, pad, pad, pad), mode="reflect") for t in (k, v, pe))
        if self.export_mode or (torch.is_grad_enabled() and self._whole_image_training(x)):
            return self._traceable(q, k_pad, v_pad, pe, pe_pad)
        rows = self.band_rows(batch, height, width, training=torch.is_grad_enabled())
        bands = [self._band(q, k_pad, v_pad, pe, pe_pad, r0, min(r0 + rows, height))
                 for r0 in range(0, height, rows)]
        return bands[0] if len(bands) == 1 else torch.cat(bands, dim=2)

    def _whole_image_training(self, x: Tensor) -> bool:
        return x.device.type != "cpu" if self.whole_image_training is None else self.whole_image_training

    def _band(self, q: Tensor, k_pad: Tensor, v_pad: Tensor, pe: Tensor, pe_pad: Tensor, r0: int, r1: int) -> Tensor:
        """Output rows ``r0:r1``: the footprints of those rows live in padded rows ``r0 : r1 + k - 1``.

        Footprint position j = (dy, dx) of every pixel of the band is the shifted window
        ``padded[:, :, r0 + dy : r1 + dy, dx : dx + W]``; the code loops over the k*k windows (plain slices) instead
        of materialising ``F.unfold`` of the values, which is the same sum at a fraction of the memory traffic.
        """
        first, second = self.conv_w[1], self.conv_w[2]
        assert isinstance(first, nn.Conv2d) and isinstance(second, nn.Conv2d) and second.bias is not None
        mix = second.weight.flatten(1) @ first.weight.flatten(1)
        if torch.is_grad_enabled() and not self.reference_backward and not torch.is_autocast_enabled(q.device.type):
            return _PairwiseBand.apply(q, k_pad, v_pad, pe, pe_pad, mix, second.bias, self.kernel_size, r0, r1)
        batch, width = q.shape[0], q.shape[3]
        size, span = self.kernel_size, r1 - r0
        windows = _windows(size)

        def differences(t: Tensor, padded: Tensor) -> Tensor:  # (B, C, k*k, span * W): centre minus neighbour
            centre = t[:, :, r0:r1]
            taps = [centre - padded[:, :, r0 + dy:r1 + dy, dx:dx + width] for dy, dx in windows]
            return torch.stack(taps, dim=2).flatten(3)

        # conv_w = LeakyReLU, 1x1 (no bias), 1x1 over concat[relation, position]: the two linear maps compose into
        # one (Cw x (rel + 2)) matrix (``mix``), applied to each part on its own (the position part has batch 1 and
        # broadcasts).
        rel = q.shape[1]
        relation = F.leaky_relu(differences(q, k_pad), 0.2, inplace=True)
        position = F.leaky_relu(differences(pe, pe_pad), 0.2, inplace=True)
        logits = torch.einsum("oc,bctn->botn", mix[:, :rel], relation)
        logits = logits + (torch.einsum("oc,bctn->botn", mix[:, rel:], position) + second.bias.view(1, -1, 1, 1))
        weights = torch.softmax(logits, dim=2)
        weights = weights.view(batch, 1, self.weight_maps, len(windows), span, width)
        # value channel c uses weight map c % Cw (tiled): split the channels as (groups, Cw)
        groups = v_pad.shape[1] // self.weight_maps
        out = v_pad.new_zeros(batch, groups, self.weight_maps, span, width)
        for j, (dy, dx) in enumerate(windows):
            window = v_pad[:, :, r0 + dy:r1 + dy, dx:dx + width]
            out.addcmul_(window.view(batch, groups, self.weight_maps, span, width), weights[:, :, :, j])
        return out.view(batch, v_pad.shape[1], span, width)

    def _traceable(self, q: Tensor, k_pad: Tensor, v_pad: Tensor, pe: Tensor, pe_pad: Tensor) -> Tensor:
        """The whole image in one band, written for the ONNX exporter (``export_mode``) and used for training on
        accelerators (``whole_image_training``): same sums as :meth:`_band`.

        The k*k windows come from one convolution with one-hot kernels (each output channel copies one window: exact,
        every other product is a zero) instead of k*k slices, whose count makes the exporter's graph rewriting slow;
        the weight maps from 1x1 convolutions instead of ``einsum`` (whose batched matmul fixes the batch size when
        exported) and the aggregation from one product and sum instead of the in-place loop.
        """
        batch, _, height, width = q.shape
        taps = self.kernel_size**2
        one_hot = torch.eye(taps, dtype=q.dtype, device=q.device).view(taps, 1, self.kernel_size, self.kernel_size)

        def footprints(padded: Tensor) -> Tensor:  # (B, C, k*k, H, W): the window of each footprint position
            flat = padded.reshape(-1, 1, padded.shape[2], padded.shape[3])
            return F.conv2d(flat, one_hot).view(padded.shape[0], padded.shape[1], taps, height, width)

        first, second = self.conv_w[1], self.conv_w[2]
        assert isinstance(first, nn.Conv2d) and isinstance(second, nn.Conv2d) and second.bias is not None
        mix = second.weight.flatten(1) @ first.weight.flatten(1)
        rel = q.shape[1]
        relation = F.leaky_relu(q.unsqueeze(2) - footprints(k_pad), 0.2).flatten(3)  # (B, rel, k*k, H*W)
        position = F.leaky_relu(pe.unsqueeze(2) - footprints(pe_pad), 0.2).flatten(3)
        logits = F.conv2d(relation, mix[:, :rel, None, None])
        logits = logits + F.conv2d(position, mix[:, rel:, None, None], second.bias)
        weights = torch.softmax(logits, dim=2).view(batch, 1, self.weight_maps, taps, height, width)
        groups = v_pad.shape[1] // self.weight_maps
        values = footprints(v_pad).view(batch, groups, self.weight_maps, taps, height, width)
        return (values * weights).sum(3).view(batch, v_pad.shape[1], height, width)
