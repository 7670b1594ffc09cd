"""Dense 1x1 fusion over a growing set of feature maps (JDNet's ``DenseConnection``), without concatenating.

A densely connected chain fuses, after unit i, the entry features and every unit output so far with a 1x1
convolution: ``out_i = W_i @ concat[f_0, ..., f_{i+1}] + b_i``. Concatenating the growing list at every step
moves O(units^2) feature maps through memory, forward and backward (``torch.cat`` and its sliced gradients).

Here every feature map is written once, channels last, into one ``pixels x (units + 1) * C`` buffer, and fusion i
is one matrix product with a column prefix of it (a strided view, no copy). The backward is written by hand and
adds each fusion's input gradient into one buffer of the same shape: fusion i's backward runs before unit i's
(which needs the gradient of f_{i+1}), and after every fusion that reads f_{i+1} -- those are later fusions, whose
backward autograd runs first -- so when fusion i returns the gradient of f_{i+1}, that column block is complete.
The same path serves inference (no autograd) and training; ``tests/archs/test_jdnet.py`` compares values and
gradients with the concatenating formulation.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor


def _rows(t: Tensor) -> Tensor:
    """``(N, H, W, C)`` channels-last storage as a ``pixels x C`` matrix (a view)."""
    return t.view(-1, t.shape[-1])


class DenseBuffer:
    """The features of one forward pass, ``(N, H, W, (units + 1) * C)`` channels last, and their gradient."""

    def __init__(self, first: Tensor, units: int) -> None:
        batch, channels, height, width = first.shape
        self.shape = (batch, height, width, channels)
        self.units = units
        self.values = first.new_empty(batch, height, width, channels * (units + 1))
        self.values[..., :channels] = first.detach().permute(0, 2, 3, 1)
        self.grads: Tensor | None = None

    def block(self, t: Tensor, index: int) -> Tensor:
        """Feature ``index`` (0: the entry features) of ``t`` as an NCHW view."""
        channels = self.shape[-1]
        return t[..., index * channels:(index + 1) * channels].permute(0, 3, 1, 2)


class _Fuse(torch.autograd.Function):
    """Fusion ``index``: store unit ``index``'s output, then ``W @ features[: index + 2] + b`` (NCHW view)."""

    @staticmethod
    def forward(ctx: Any, newest: Tensor, first: Tensor, weight: Tensor, bias: Tensor, state: DenseBuffer,
                index: int) -> Tensor:
        channels = state.shape[-1]
        state.block(state.values, index + 1).copy_(newest)
        used = (index + 2) * channels
        dtype = state.values.dtype  # under mixed precision the features may be float16 and the weights float32
        matrix = weight.view(weight.shape[0], used).t().to(dtype)
        out = torch.addmm(bias.to(dtype), _rows(state.values)[:, :used], matrix)
        ctx.save_for_backward(weight)
        ctx.bias_dtype = bias.dtype
        ctx.state, ctx.index, ctx.used = state, index, used
        return out.view(*state.shape[:3], -1).permute(0, 3, 1, 2)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        (weight,) = ctx.saved_tensors
        state, index, used, bias_dtype = ctx.state, ctx.index, ctx.used, ctx.bias_dtype
        if index == state.units - 1 or state.grads is None:  # the last fusion's backward comes first: a new pass
            state.grads = torch.zeros_like(state.values)
        dtype = state.values.dtype  # the backward runs outside autocast: every product in the features' dtype
        g = grad.permute(0, 2, 3, 1).reshape(-1, grad.shape[1]).to(dtype)
        inputs = _rows(state.values)[:, :used]
        grad_weight = (g.t() @ inputs).view_as(weight).to(weight.dtype) if ctx.needs_input_grad[2] else None
        accumulate = torch.promote_types(dtype, torch.float32)
        grad_bias = g.sum(0, dtype=accumulate).to(bias_dtype) if ctx.needs_input_grad[3] else None
        _rows(state.grads)[:, :used].addmm_(g, weight.view(weight.shape[0], used).to(dtype))
        grad_newest = state.block(state.grads, index + 1)
        grad_first = state.block(state.grads, 0) if index == 0 and ctx.needs_input_grad[1] else None
        return grad_newest, grad_first, grad_weight, grad_bias, None, None


def dense_fuse(newest: Tensor, first: Tensor, weight: Tensor, bias: Tensor, state: DenseBuffer,
               index: int) -> Tensor:
    """Fusion ``index`` of a dense chain: ``conv1x1(concat[first, f_1, ..., f_{index+1}])`` with ``newest`` =
    f_{index+1} (the output of unit ``index``); ``first`` is the chain's input (its gradient comes from fusion 0).
    Call it for index 0, 1, ... in order on one :class:`DenseBuffer`."""
    return _Fuse.apply(newest, first, weight, bias, state, index)
