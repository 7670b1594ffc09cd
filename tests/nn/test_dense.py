"""The dense fusion buffer (derain.nn.dense) against concatenate-then-convolve: values and gradients."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from derain.nn.dense import DenseBuffer, dense_fuse


def _chain(x: torch.Tensor, units: list[torch.nn.Conv2d], fuses: list[torch.nn.Conv2d], *, cat: bool) -> torch.Tensor:
    state = DenseBuffer(x, len(units))
    features, out = [x], x
    for i, (unit, fuse) in enumerate(zip(units, fuses, strict=True)):
        newest = torch.tanh(unit(out))
        if cat:
            features.append(newest)
            out = F.leaky_relu(fuse(torch.cat(features, dim=1)), 0.2)
        else:
            out = F.leaky_relu(dense_fuse(newest, x, fuse.weight, fuse.bias, state, i), 0.2)
    return out


def test_dense_fuse_equals_concatenation_forward_and_backward() -> None:
    torch.manual_seed(0)
    channels, count = 4, 5
    units = [torch.nn.Conv2d(channels, channels, 3, padding=1).double() for _ in range(count)]
    fuses = [torch.nn.Conv2d((i + 2) * channels, channels, 1).double() for i in range(count)]
    params = [p for m in units + fuses for p in m.parameters()]
    x0 = torch.randn(2, channels, 7, 9, dtype=torch.float64)
    results = []
    for cat in (True, False):
        x = x0.clone().requires_grad_()
        out = _chain(x, units, fuses, cat=cat)
        grads = torch.autograd.grad((out * out.detach().sign()).sum(), [x, *params])
        results.append((out.detach(), grads))
    (want, want_grads), (got, got_grads) = results
    torch.testing.assert_close(got, want, rtol=0, atol=1e-12)
    for g, w in zip(got_grads, want_grads, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-12)


def test_a_second_backward_through_a_retained_graph_is_not_doubled() -> None:
    torch.manual_seed(0)
    units = [torch.nn.Conv2d(2, 2, 3, padding=1) for _ in range(3)]
    fuses = [torch.nn.Conv2d((i + 2) * 2, 2, 1) for i in range(3)]
    x = torch.randn(1, 2, 6, 6, requires_grad=True)
    loss = _chain(x, units, fuses, cat=False).sum()
    first = torch.autograd.grad(loss, [x, fuses[0].weight], retain_graph=True)
    second = torch.autograd.grad(loss, [x, fuses[0].weight])
    for a, b in zip(first, second, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
