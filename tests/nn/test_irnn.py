"""IRNN contracts: the chunked scan equals the reference loop (values and gradients) for weights of both signs,
|w| > 1 and w = 0, odd lengths, both boundary rules, all four directions; the module matches the official layout."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from derain.nn.irnn import IRNN, auto_chunk, irnn_sweep

# One channel per regime: negative, |w| > 1 (both signs), zero, small, near and at 1.
WEIGHTS = [-1.3, -0.7, -0.2, 0.0, 0.3, 0.9, 1.0, 1.2]
DIRECTIONS = {"up": (2, True), "right": (3, False), "down": (2, False), "left": (3, True)}


def _both(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor, *, chunk: int | None = None,
          **kw: object) -> tuple[list[torch.Tensor], list[list[torch.Tensor]]]:
    """Outputs and gradients (w.r.t. x, w, b) of loop and scan for one random cotangent."""
    cot = torch.randn_like(x)
    outs, grads = [], []
    for method, ch in (("loop", None), ("scan", chunk)):
        leaves = [t.detach().clone().requires_grad_() for t in (x, w, b)]
        out = irnn_sweep(*leaves, method=method, chunk=ch, **kw)  # type: ignore[arg-type]
        g = torch.autograd.grad((out * cot).sum(), leaves, allow_unused=True)
        outs.append(out.detach())
        grads.append([torch.zeros_like(t) if gi is None else gi for gi, t in zip(g, leaves, strict=True)])
    return outs, grads


def _close(a: torch.Tensor, b: torch.Tensor, tol: float) -> None:
    scale = max(1.0, float(a.abs().max())) if a.numel() else 1.0
    torch.testing.assert_close(b, a, rtol=tol, atol=tol * scale)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("direction", sorted(DIRECTIONS))
@pytest.mark.parametrize("boundary_relu", [True, False])
@pytest.mark.parametrize("n", [1, 2, 7, 33])
@pytest.mark.parametrize("chunk", [None, 3])
def test_scan_matches_loop(n: int, boundary_relu: bool, direction: str, dtype: torch.dtype,
                           chunk: int | None) -> None:
    torch.manual_seed(n)
    dim, reverse = DIRECTIONS[direction]
    shape = [2, len(WEIGHTS), 5, 5]
    shape[dim] = n
    x = torch.randn(shape, dtype=dtype)
    w = torch.tensor(WEIGHTS, dtype=dtype)
    b = torch.rand(len(WEIGHTS), dtype=dtype) - 0.5
    outs, grads = _both(x, w, b, chunk=chunk, dim=dim, reverse=reverse, boundary_relu=boundary_relu)
    tol = 1e-5 if dtype == torch.float32 else 1e-10
    _close(outs[0], outs[1], tol)
    for g_loop, g_scan in zip(grads[0], grads[1], strict=True):
        _close(g_loop, g_scan, tol)
    with torch.no_grad():  # the in-place inference path
        fast = irnn_sweep(x, w, b, dim=dim, reverse=reverse, boundary_relu=boundary_relu, chunk=chunk)
    _close(outs[0], fast, tol)


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 40), rest=st.integers(1, 3), channels=st.integers(1, 3),
    weights=st.lists(st.floats(-1.5, 1.5), min_size=3, max_size=3),
    chunk=st.one_of(st.none(), st.integers(1, 12)), reverse=st.booleans(), boundary_relu=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_scan_matches_loop_property(n: int, rest: int, channels: int, weights: list[float], chunk: int | None,
                                    reverse: bool, boundary_relu: bool, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(1, channels, n, rest, generator=gen, dtype=torch.float64) * 2
    w = torch.tensor(weights[:channels], dtype=torch.float64)
    b = torch.randn(channels, generator=gen, dtype=torch.float64)
    outs, grads = _both(x, w, b, chunk=chunk, dim=2, reverse=reverse, boundary_relu=boundary_relu)
    _close(outs[0], outs[1], 1e-9)
    for g_loop, g_scan in zip(grads[0], grads[1], strict=True):
        _close(g_loop, g_scan, 1e-9)


def test_exact_zero_chunk_starts_keep_gradients() -> None:
    """ReLU zeros at chunk boundaries are the tie case: the gradient must still follow the loop's."""
    x = torch.rand(1, 3, 24, 2, dtype=torch.float64)
    x[:, :, ::4] = -5.0  # every chunk of 4 starts right after a clamped element
    w = torch.tensor([0.5, -0.5, 1.0], dtype=torch.float64)
    b = torch.zeros(3, dtype=torch.float64)
    outs, grads = _both(x, w, b, chunk=4, dim=2, reverse=False)
    _close(outs[0], outs[1], 1e-12)
    for g_loop, g_scan in zip(grads[0], grads[1], strict=True):
        _close(g_loop, g_scan, 1e-12)


def test_large_weights_do_not_overflow_the_anchors() -> None:
    x = torch.zeros(1, 2, 200, 3)
    w = torch.tensor([3.0, -40.0])
    b = torch.tensor([-1.0, -1.0])  # the state stays 0 although |w|^k is huge
    out = irnn_sweep(x, w, b, dim=2, reverse=False, chunk=100)
    assert torch.isfinite(out).all() and out.abs().max() == 0


def test_recurrence_definition_by_hand() -> None:
    x = torch.tensor([1.0, -2.0, 3.0, -4.0]).view(1, 1, 1, 4)
    w, b = torch.tensor([0.5]), torch.tensor([0.25])
    right = irnn_sweep(x, w, b, dim=3, reverse=False)
    torch.testing.assert_close(right.flatten(), torch.tensor([1.0, 0.0, 3.25, 0.0]))
    left = irnn_sweep(x, w, b, dim=3, reverse=True, boundary_relu=False)
    # h3 = -4 (raw), h2 = relu(-2 + 0.25 + 3) = 1.25, h1 = relu(0.625 + 0.25 - 2) = 0, h0 = relu(0.25 + 1) = 1.25
    torch.testing.assert_close(left.flatten(), torch.tensor([1.25, 0.0, 1.25, -4.0]))


def test_module_layout_and_directions() -> None:
    torch.manual_seed(0)
    irnn = IRNN(channels=4)
    assert list(irnn.state_dict()) == [f"{d}_weight.{p}" for d in ("left", "right", "up", "down")
                                      for p in ("weight", "bias")]
    assert irnn.up_weight.weight.shape == (4, 1, 1, 1) and irnn.up_weight.bias.shape == (4,)
    assert torch.all(irnn.left_weight.weight == 0.2)
    x = torch.randn(2, 4, 9, 13)
    up, right, down, left = irnn(x)
    expected = [irnn_sweep(x, getattr(irnn, f"{name}_weight").weight, getattr(irnn, f"{name}_weight").bias,
                           dim=DIRECTIONS[name][0], reverse=DIRECTIONS[name][1], method="loop")
                for name in ("up", "right", "down", "left")]
    for got, want in zip((up, right, down, left), expected, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    irnn.method = "loop"
    for got, want in zip(irnn(x), expected, strict=True):
        torch.testing.assert_close(got, want)


@pytest.mark.parametrize("shape", [(1, 2, 37, 23), (2, 3, 48, 16), (1, 32, 20, 70)])
def test_forward_concat_matches_cat(shape: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    irnn = IRNN(channels=shape[1])
    x = torch.randn(shape)
    with torch.no_grad():  # written in place into one buffer (incl. padded chunking for the prime length 37)
        fast = irnn.forward_concat(x)
        expected = torch.cat(irnn(x), dim=1)
    assert fast.is_contiguous()
    torch.testing.assert_close(fast, expected)
    torch.testing.assert_close(irnn.forward_concat(x), expected)  # autograd path
    irnn.method = "loop"
    torch.testing.assert_close(irnn.forward_concat(x), expected, rtol=1e-5, atol=1e-5)


def test_module_backward_and_dtype() -> None:
    irnn = IRNN(channels=3, boundary_relu=False).double()
    x = torch.randn(1, 3, 6, 5, dtype=torch.float64, requires_grad=True)
    outs = irnn(x)
    assert all(o.dtype == torch.float64 and o.shape == x.shape for o in outs)
    sum(o.square().sum() for o in outs).backward()
    assert x.grad is not None and all(p.grad is not None for p in irnn.parameters())


def test_auto_chunk_policy() -> None:
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert auto_chunk(10, step_numel=10, device=cpu) == 10
    assert auto_chunk(480, step_numel=32 * 320, device=cpu) == 480  # big steps on CPU: one sequential sweep
    k = auto_chunk(480, step_numel=64, device=cpu)
    assert 16 <= k <= 48 and 480 % k == 0
    assert auto_chunk(1920, step_numel=32 * 1080, device=cuda) < 100
    assert auto_chunk(1000, step_numel=64, device=cpu, max_abs_w=1e6) < 10  # overflow guard


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"dim": 1}, "spatial dimension"),
    ({"dim": 2, "method": "fft"}, "method"),
])
def test_sweep_rejects_bad_arguments(kwargs: dict[str, object], match: str) -> None:
    x = torch.zeros(1, 2, 3, 3)
    with pytest.raises(ValueError, match=match):
        irnn_sweep(x, torch.zeros(2), torch.zeros(2), reverse=False, **kwargs)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="one value per channel"):
        irnn_sweep(x, torch.zeros(3), torch.zeros(2), dim=2, reverse=False)


def test_module_rejects_bad_method() -> None:
    with pytest.raises(ValueError, match="method"):
        IRNN(channels=2, method="fft")  # type: ignore[arg-type]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_scan_matches_loop_on_cuda() -> None:
    irnn = IRNN(channels=8).cuda()
    x = torch.randn(2, 8, 33, 47, device="cuda")
    fast = irnn(x)
    irnn.method = "loop"
    for got, want in zip(fast, irnn(x), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("method", ["doubling", "export"])
@pytest.mark.parametrize("boundary_relu", [True, False])
@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_export_friendly_sweeps_equal_the_loop(method: str, boundary_relu: bool, sign: float) -> None:
    """The export-friendly sweeps against the reference: the scan op (one ONNX Scan) and the doubling scan (fixed
    steps, no data-dependent control flow, the fallback for a torch without the scan op)."""
    g = torch.Generator().manual_seed(5)
    x = torch.randn(2, 3, 17, 29, generator=g, dtype=torch.float64) * 2
    w = sign * torch.rand(3, generator=g, dtype=torch.float64) * 0.99
    b = torch.randn(3, generator=g, dtype=torch.float64) * 0.3
    x5 = torch.randn(1, 3, 6, 5, 4, generator=g, dtype=torch.float64) * 2  # more than one trailing dim
    for t, dims in ((x, (2, 3)), (x5, (2, 3, 4))):
        for dim in dims:
            for reverse in (False, True):
                ref = irnn_sweep(t, w, b, dim=dim, reverse=reverse, boundary_relu=boundary_relu, method="loop")
                got = irnn_sweep(t, w, b, dim=dim, reverse=reverse, boundary_relu=boundary_relu, method=method)
                assert torch.allclose(got, ref, atol=1e-10, rtol=0)
    with pytest.raises(ValueError, match="at most 4 positions"):
        from derain.nn.irnn import sweep_doubling
        sweep_doubling(x, w, b, reverse=False, boundary_relu=True, steps=2)
