"""The IRNN of SPANet: four per-channel ReLU recurrences sweeping an image up, right, down and left.

One sweep along ``dim`` computes, for every batch item, channel ``c`` and position ``i`` in sweep order,

    h[first] = relu(x[first])          (or x[first] when boundary_relu=False)
    h[i]     = relu(w_c * h[i-1] + b_c + x[i])

with a scalar weight ``w_c`` and bias ``b_c`` per channel (``Spacial_IRNN`` of stevewongv/SPANet, whose CUDA kernel
applies the ReLU to the boundary element; the pure-PyTorch IRNN committed with the released checkpoint did not,
the official CUDA kernel, README "SPANet and JDNet").

Two implementations for running, equal up to rounding, both plain torch ops (gradients come from autograd; CPU and
CUDA), and two for ``derain export`` (below them):

``method="loop"``  the reference: a Python loop over positions, each step vectorised over the other dimensions.

``method="scan"``  a chunked associative scan. Why it is exact: every step is the map f(h) = clamp(w*h + c, 0, inf)
    (c = b + x[i]). Call a map *clamp-affine* if it has the form F(h) = clamp(a*h + d, lo, hi) with lo <= hi.
    The family is closed under composition with a step f, whatever the sign of w:
      * w*clamp(u, lo, hi) + c = clamp(w*u + c, m, M) with {m, M} = {w*lo + c, w*hi + c} ordered (an affine map
        with w >= 0 keeps the order of the bounds, w < 0 swaps them, w = 0 makes m = M = c), and
      * clamp(clamp(v, m, M), 0, inf) = clamp(v, max(m, 0), max(M, 0)),
    so f o F = clamp(w*a*h + (w*d + c), lo', hi'), again clamp-affine, with slope a' = w*a (so a = w^k after k
    steps) and offset d' = w*d + c (the trajectory of the recurrence without ReLU, started from 0). A clamp-affine
    map is monotone, so on an interval [s0, s1] its bounds can be read off the endpoints:
    F(h) = clamp(a*h + d, min(F(s0), F(s1)), max(F(s0), F(s1))) for h in [s0, s1] -- and F(s0), F(s1) are just
    the recurrence run from s0 and from s1. We take s0 = -1 and s1 = BIG = sqrt(finfo.max): every state a sweep
    can reach lies in [0, BIG) (states are ReLU outputs, apart from the raw boundary element, which is handled
    by running the first map of the first chunk without ReLU). The lower anchor sits *below* 0 on purpose:
    chunk starts are often exactly 0 (ReLU), and an anchor at 0 would make a*0 + d tie with F(0) and send the
    gradient through the wrong branch whenever rounding breaks the tie the wrong way.
    The sweep is cut into chunks of k positions:
      1. for all chunks at once (k vectorised steps): the offset d and the trajectories from -1 and BIG;
      2. sequentially over the chunks (N/k small steps): chunk start values s_{m+1} = F_m(s_m);
      3. for all chunks at once (k vectorised steps): the recurrence itself from the chunk starts.
    This is about 2k + N/k Python-level steps instead of N, for about three times the loop's arithmetic. The chunk
    length comes from :func:`auto_chunk`: ~sqrt(2N) on CUDA (where every step is a kernel launch) and for small
    steps; on CPU, steps of a few thousand values already run at memory speed and the extra arithmetic does not
    pay, so there the sweep is a single chunk (``chunk=N``: no phases 1-2, the plain recurrence on a layout where
    every step reads and writes contiguous rows). Without gradients every step runs in place in the output buffer
    (no per-step tensors, no final stack). Composites are limited to k with BIG * |w|^k finite.
    Accuracy: for |w| <= 1 the scan agrees with the loop to a few ulps of the largest |b + x| times k; for
    |w| > 1 both are as ill-conditioned as the recurrence itself (errors grow like |w|^k).

``method="export"``  the recurrence as torch's ``scan`` higher-order op (:func:`sweep_export`), two per IRNN (up
    and down stacked along the channels, then left and right), which the ONNX exporter writes as ``Scan`` nodes:
    ONNX Runtime runs the plain sweep, any size. Eager PyTorch compiles the op on first use; it is for export.
``method="doubling"``  a doubling scan of the clamp-affine maps in 13 whole-tensor steps (:func:`sweep_doubling`),
    no control flow at all: the export form for a torch without the scan op, 13 passes over every sweep.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

Method = Literal["scan", "loop", "doubling", "export"]
DOUBLING_STEPS = 13  # the doubling scan covers sweeps of up to 2**13 = 8192 positions

# IRNN output name -> (swept dim of an NCHW tensor, sweep from the last index down)
DIRECTIONS = {"up": (2, True), "right": (3, False), "down": (2, False), "left": (3, True)}

_LOW_ANCHOR = -1.0
_CPU_SEQUENTIAL_NUMEL = 2048


def irnn_sweep(x: Tensor, weight: Tensor, bias: Tensor, *, dim: int, reverse: bool, boundary_relu: bool = True,
               method: Method = "scan", chunk: int | None = None) -> Tensor:
    """One IRNN sweep of ``x`` (``(B, C, ...)``, channels at dim 1) along ``dim`` (any dim >= 2).

    ``weight`` and ``bias`` hold one scalar per channel (shape ``(C,)`` or a depthwise conv weight ``(C, 1, 1, 1)``).
    ``reverse=False`` sweeps from index 0 upwards, ``reverse=True`` from the last index down. ``chunk`` overrides the
    scan's chunk length (tests and benchmarks); the result does not depend on it.
    """
    w, b, dim = _check(x, weight, bias, dim)
    if method == "loop":
        return _sweep_loop(x, w, b, dim=dim, reverse=reverse, boundary_relu=boundary_relu)
    if method == "doubling":
        moved = x.movedim(dim, -1)
        return sweep_doubling(moved, w, b, reverse=reverse, boundary_relu=boundary_relu).movedim(-1, dim)
    if method == "export":
        moved = x.movedim(dim, 2)
        moved = moved.flip(2) if reverse else moved
        out = sweep_export(moved.reshape(*moved.shape[:3], -1), w, b, boundary_relu=boundary_relu)
        out = out.reshape(moved.shape)
        return (out.flip(2) if reverse else out).movedim(2, dim)
    if method != "scan":
        raise ValueError(f"method must be 'scan', 'loop', 'doubling' or 'export', got {method!r}")
    moved = x.movedim(dim, 2)
    flat = moved.reshape(moved.shape[0], moved.shape[1], moved.shape[2], -1)
    out = sweep_scan(flat, w, b, reverse=reverse, boundary_relu=boundary_relu, chunk=chunk)
    return out.reshape(moved.shape).movedim(2, dim)


def _check(x: Tensor, weight: Tensor, bias: Tensor, dim: int) -> tuple[Tensor, Tensor, int]:
    if x.ndim < 3:
        raise ValueError(f"expected a (B, C, ...) tensor with at least one sweep dimension, got shape {tuple(x.shape)}")
    channels = x.shape[1]
    if weight.numel() != channels or bias.numel() != channels:
        raise ValueError(f"weight and bias need one value per channel ({channels}); "
                         f"got shapes {tuple(weight.shape)} and {tuple(bias.shape)}")
    if dim < 0:
        dim += x.ndim
    if not 2 <= dim < x.ndim:
        raise ValueError(f"dim must name a spatial dimension (2..{x.ndim - 1}), got {dim}")
    return weight.reshape(channels), bias.reshape(channels), dim


def _sweep_loop(x: Tensor, w: Tensor, b: Tensor, *, dim: int, reverse: bool, boundary_relu: bool) -> Tensor:
    """The reference: one vectorised step per position, outputs stacked at the end (no in-place writes)."""
    n = x.shape[dim]
    shape = (1, -1) + (1,) * (x.ndim - 3)  # a slice drops `dim`: (B, C, rest...)
    wv, bv = w.view(shape), b.view(shape)
    xs = x.unbind(dim)  # one backward node for all slices (per-step select would zero-fill x's size N times)
    order = list(range(n - 1, -1, -1) if reverse else range(n))
    outs: list[Tensor] = [x] * n
    h = torch.relu(xs[order[0]]) if boundary_relu else xs[order[0]]
    outs[order[0]] = h
    for i in order[1:]:
        h = torch.relu(wv * h + bv + xs[i])
        outs[i] = h
    return torch.stack(outs, dim)


def sweep_doubling(x: Tensor, w: Tensor, b: Tensor, *, reverse: bool, boundary_relu: bool,
                   steps: int = DOUBLING_STEPS) -> Tensor:
    """The sweep along the last dim of ``x`` ``(B, C, ..., N)`` as a doubling (Hillis-Steele) scan of
    clamp-affine maps: a fixed number of whole-tensor steps and no data-dependent control flow, so it exports to
    ONNX with dynamic sizes (``derain export``). Slower than ``scan`` in eager mode (``steps`` full passes).

    A map is held as (a, d, p, q): F(h) = clamp(a*h + d, min(p, q), max(p, q)) on [-1, BIG] with p = F(-1),
    q = F(BIG) (the module docstring's anchors). Step s composes every map with the one 2**s positions earlier;
    the first two positions' maps are constant (their outputs), so after enough steps every composite is constant
    and p is the sweep's output. Sweeps longer than 2**steps raise.
    """
    n = x.shape[-1]
    if n > 2**steps:
        raise ValueError(f"the doubling scan covers at most {2**steps} positions, got {n}")
    if reverse:
        x = x.flip(-1)
    # every sweep of the tensor laid end to end along one dim (see _doubling)
    flat = x.reshape(x.shape[0], x.shape[1], -1)
    position = torch.arange(n, device=x.device).repeat(flat.shape[-1] // max(n, 1))
    out = _doubling(flat, w.view(1, -1, 1), b.view(1, -1, 1), position, boundary_relu=boundary_relu, steps=steps)
    out = out.view(x.shape)
    return out.flip(-1) if reverse else out


def sweep_export(x: Tensor, w: Tensor, b: Tensor, *, boundary_relu: bool) -> Tensor:
    """The sweep along dim 2 of ``x`` ``(B, C, N, R)``, forwards, as one ``torch`` scan higher-order op: the plain
    recurrence, which ``torch.onnx.export`` writes as one ONNX ``Scan`` node whose body is the step (no Python loop
    unrolled into the graph, any N). For export: eager PyTorch compiles the op on first use."""
    from torch._higher_order_ops.scan import scan

    first = x[:, :, 0].contiguous()  # the carry's layout, which the scan op requires of its initial value
    first = torch.relu(first) if boundary_relu else first
    if x.shape[2] == 1:  # nothing to scan (export allows sides >= 16, so this never enters a graph)
        return first.unsqueeze(2)
    cs = (x[:, :, 1:] + b.view(1, -1, 1, 1)).permute(2, 0, 1, 3)  # (N - 1, B, C, R): the scan runs over dim 0

    def step(carry: tuple[Tensor, Tensor], c: Tensor) -> tuple[tuple[Tensor, Tensor], Tensor]:
        h, wv = carry  # the weight rides in the carry: the step may not capture tensors
        h = torch.relu(torch.addcmul(c, wv, h))
        return (h, wv.clone()), h.clone()  # carry and output may not alias

    _, rest = scan(step, (first, w.view(1, -1, 1)), cs)
    return torch.cat([first.unsqueeze(0), rest]).permute(1, 2, 0, 3)


def _doubling(x: Tensor, wv: Tensor, bv: Tensor, position: Tensor, *, boundary_relu: bool, steps: int) -> Tensor:
    """:func:`sweep_doubling`'s scan, forwards along the last dim of ``x``, for sweeps laid end to end there.

    ``position`` (integer, broadcastable to ``x``) is each element's index within its own sweep: a sweep starts
    wherever it is 0, and none may be longer than ``2**steps``. ``wv`` and ``bv`` broadcast to ``x``.

    The first two maps of every sweep are constant, and a constant map composed after anything is itself. So a
    composite whose window reaches back to the start of its sweep is final: composing it with maps of the previous
    sweep, or with anything before the first position, changes nothing. The steps therefore shift all sweeps at
    once, with the same arithmetic per element as one sweep on its own. The shifts are padding by zeros (constant
    maps) at the front and cropping as much at the back, one ``Pad`` each when exported, valid for every size
    because the maps carry 2**(steps - 1) leading zeros (the longest shift), dropped at the end.
    """
    big = math.sqrt(torch.finfo(x.dtype).max)
    c = bv + x
    # The first two outputs are computed directly and held as constant maps, so every later composite is only
    # evaluated at ReLU outputs (>= 0) or at the anchors, never at a raw (possibly < -1) boundary value.
    first = torch.relu(x) if boundary_relu else x
    second = torch.relu(wv * F.pad(first, (1, -1)) + c)  # read where position == 1, after a first
    head = torch.where(position == 0, first, second)
    rest, wr = position > 1, wv.expand_as(x)
    lead = 2 ** (steps - 1) if steps else 0
    maps = (torch.where(rest, wr, torch.zeros_like(x)), torch.where(rest, c, head),
            torch.where(rest, torch.relu(c - wr), head), torch.where(rest, torch.relu(c + wr * big), head))
    a, d, p, q = (F.pad(t, (lead, 0)) for t in maps)
    for s in range(steps):
        ap, dp, pp, qp = (F.pad(t, (2**s, -(2**s))) for t in (a, d, p, q))  # the maps 2**s positions earlier
        lo, hi = torch.minimum(p, q), torch.maximum(p, q)
        p, q = (a * pp + d).clamp(lo, hi), (a * qp + d).clamp(lo, hi)  # this map after the earlier one
        a, d = a * ap, a * dp + d
    return p[..., lead:]


def auto_chunk(n: int, *, step_numel: int, device: torch.device, max_abs_w: float = 1.0,
               dtype: torch.dtype = torch.float32) -> int:
    """The chunk length ``sweep_scan`` uses for ``n`` positions of ``step_numel`` values each.

    On CPU a step over a few thousand values already runs at memory speed, and the scan's extra work (about three
    times the loop's) costs more than the Python steps it saves: there the whole sweep is one chunk (a sequential
    sweep in a cache-friendly layout) unless the steps are small. Elsewhere (CUDA: a step is one kernel launch,
    whatever its size) and for small steps: about sqrt(2n), preferring a divisor of ``n`` (no padding), and never
    so long that BIG * max|w|^k could overflow (a single chunk has no composite, hence no such limit).
    """
    if n <= 16 or (device.type == "cpu" and step_numel >= _CPU_SEQUENTIAL_NUMEL):
        return n
    k = max(4, round(math.sqrt(2 * n)))
    divisors = [d for d in range(max(2, k * 2 // 3), k * 3 // 2 + 1) if n % d == 0]
    if divisors:
        k = min(divisors, key=lambda d: abs(d - k))
    return min(k, _max_chunk(max_abs_w, dtype))


def _max_chunk(max_abs_w: float, dtype: torch.dtype) -> int:
    if not max_abs_w > 1.0:
        return 1 << 30
    if not math.isfinite(max_abs_w):
        return 2
    headroom = math.log(torch.finfo(dtype).max) / 2 - 1  # BIG = sqrt(max): |w|^k * BIG must stay finite
    return max(2, int(headroom / math.log(max_abs_w)))


def sweep_scan(x: Tensor, w: Tensor, b: Tensor, *, reverse: bool, boundary_relu: bool = True,
               chunk: int | None = None, out: Tensor | None = None) -> Tensor:
    """The chunked scan on a ``(B, C, N, R)`` tensor (any strides), sweeping dim 2 (see the module docstring).

    When no gradient is needed (``torch.no_grad``, or no input requires grad) the steps write in place into one
    buffer (``out`` if given: a ``(B, C, N, R)`` tensor whose dims 2 and 3 are contiguous) instead of building an
    autograd-friendly list of outputs; the values are the same. ``out`` is ignored when gradients are tracked.
    """
    bsz, channels, n, rest = x.shape
    track = torch.is_grad_enabled() and (x.requires_grad or w.requires_grad or b.requires_grad)
    first = n - 1 if reverse else 0
    # c = b + x everywhere except the first position, whose map is relu(w*0 + x) (or x itself) from state 0.
    mask = torch.ones(n, dtype=x.dtype, device=x.device)
    mask[first] = 0
    bias = (b.view(channels, 1) * mask).view(1, channels, n, 1)
    max_abs_w = float(w.detach().abs().max()) if w.numel() else 0.0
    if chunk is None:
        chunk = auto_chunk(n, step_numel=bsz * channels * rest, device=x.device, max_abs_w=max_abs_w,
                           dtype=x.dtype)
    k = max(1, min(chunk, n))
    if k < n:
        k = min(k, _max_chunk(max_abs_w, x.dtype))
    q = -(-n // k)
    if q > 1 and k == 1:  # a chunk of one raw boundary element could start the next chunk below the anchors
        k, q = 2, -(-n // 2)
    if q * k != n:  # pad after the last position in sweep order: padded steps come last and are dropped
        pad = q * k - n
        c = F.pad(x + bias, (0, 0, pad, 0) if reverse else (0, 0, 0, pad))
    elif track:
        c = (x + bias).contiguous()
    else:  # one pass into the output buffer, whatever the layout of x
        c = torch.add(x, bias, out=out if out is not None else x.new_empty(x.shape))
    cv = c.view(bsz, channels, q, k, rest)
    wv = w.view(1, channels, 1, 1)
    steps = range(k - 1, -1, -1) if reverse else range(k)
    first_chunk = q - 1 if reverse else 0
    if q == 1:
        h = x.new_zeros(bsz, channels, 1, rest)
    else:
        h = _chunk_starts(cv, w, reverse=reverse, boundary_relu=boundary_relu, track=track)

    # Phase 3: the recurrence inside every chunk, all chunks at once.
    raw_first = None if boundary_relu else _first_chunk_mask(q, first_chunk, x)
    cols = cv.unbind(3)  # the k step inputs, each (B, C, q, R); one backward node
    if track:
        outs: list[Tensor] = [x] * k
        for j in steps:
            pre = torch.addcmul(cols[j], wv, h)
            h = torch.relu(pre) if raw_first is None else torch.where(raw_first, pre, torch.relu(pre))
            raw_first = None
            outs[j] = h
        result = torch.stack(outs, 3).view(bsz, channels, q * k, rest)
    else:
        for j in steps:  # c becomes the output, column by column
            h = cols[j].addcmul_(wv, h)
            if raw_first is None:
                h.relu_()
            else:
                h.copy_(torch.where(raw_first, h, torch.relu(h)))
                raw_first = None
        result = c
    if q * k != n:
        result = result[:, :, q * k - n:] if reverse else result[:, :, :n]
        if out is not None and not track:
            result = out.copy_(result)
    return result


def _first_chunk_mask(q: int, index: int, like: Tensor) -> Tensor:
    mask = torch.zeros(q, 1, dtype=torch.bool, device=like.device)
    mask[index] = True
    return mask


def _chunk_starts(cv: Tensor, w: Tensor, *, reverse: bool, boundary_relu: bool, track: bool) -> Tensor:
    """Phases 1 and 2: the state entering every chunk, ``(B, C, q, R)``."""
    bsz, channels, q, k, rest = cv.shape
    # Phase 1, on every chunk but the last in sweep order (its composite is never applied). One state tensor
    # holds the offset d (no ReLU) and the trajectories from the two anchors (ReLU): floor = (-inf, 0, 0).
    body = (cv[:, :, 1:] if reverse else cv[:, :, :-1]).unbind(3)
    big = math.sqrt(torch.finfo(cv.dtype).max)
    like = {"dtype": cv.dtype, "device": cv.device}
    state = torch.tensor([0.0, _LOW_ANCHOR, big], **like).view(3, 1, 1, 1, 1)
    floor = torch.tensor([-math.inf, 0.0, 0.0], **like).view(3, 1, 1, 1, 1)
    wv = w.view(1, channels, 1, 1)
    steps = list(range(k - 1, -1, -1) if reverse else range(k))
    state = torch.addcmul(body[steps[0]], wv, state)
    if not boundary_relu:  # the first map of the first chunk is affine (no ReLU)
        floor0 = floor.expand(3, 1, 1, q - 1, 1).clone()
        floor0[:, :, :, q - 2 if reverse else 0] = -math.inf
        state = torch.maximum(state, floor0)
    else:
        state = torch.maximum(state, floor)
    for j in steps[1:]:
        if track:
            state = torch.maximum(torch.addcmul(body[j], wv, state), floor)
        else:
            torch.maximum(torch.addcmul(body[j], wv, state, out=state), floor, out=state)
    offset, lo, hi = state[0], torch.minimum(state[1], state[2]), torch.maximum(state[1], state[2])
    slope = (w**k).view(1, channels, 1)

    # Phase 2: sequential over chunks, s_{m+1} = clamp(a*s_m + d_m, lo_m, hi_m).
    s = cv.new_zeros(bsz, channels, rest)
    starts = [s]
    order = range(q - 2, -1, -1) if reverse else range(q - 1)
    offsets, los, his = offset.unbind(2), lo.unbind(2), hi.unbind(2)
    for m in order:
        # not torch.clamp: its backward drops the gradient when lo == hi (both anchors merged), which is common
        s = torch.minimum(torch.maximum(torch.addcmul(offsets[m], slope, s), los[m]), his[m])
        starts.append(s)
    if reverse:
        starts.reverse()
    return torch.stack(starts, 2)


class IRNN(nn.Module):
    """``Spacial_IRNN``: four sweeps of one input, returned as ``(up, right, down, left)``.

    The depthwise 1x1 convolutions only hold the per-channel weight (initialised to ``alpha``) and bias (PyTorch's
    default conv-bias init); their names reproduce the official state_dict keys. ``up`` sweeps bottom to top,
    ``right`` left to right, ``down`` top to bottom, ``left`` right to left. With the scan on 4-D input the
    horizontal sweeps run on a transposed layout, and ``right``/``left`` come back as transposed views (not
    contiguous); :meth:`forward_concat` returns the channel concatenation SPANet's SAM needs.
    """

    def __init__(self, *, channels: int = 32, alpha: float = 0.2, boundary_relu: bool = True,
                 method: Method = "scan") -> None:
        super().__init__()
        if method not in ("scan", "loop", "doubling", "export"):
            raise ValueError(f"method must be 'scan', 'loop', 'doubling' or 'export', got {method!r}")
        self.boundary_relu = boundary_relu
        self.method: Method = method
        for name in ("left_weight", "right_weight", "up_weight", "down_weight"):  # the official key order
            conv = nn.Conv2d(channels, channels, kernel_size=1, groups=channels, bias=True)
            nn.init.constant_(conv.weight, alpha)
            setattr(self, name, conv)

    def _params(self, name: str) -> tuple[Tensor, Tensor]:
        conv: nn.Conv2d = getattr(self, f"{name}_weight")
        assert conv.bias is not None
        return conv.weight.reshape(-1), conv.bias

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        return self._run(x, None)

    def forward_concat(self, x: Tensor) -> Tensor:
        """``torch.cat(self(x), dim=1)``; without gradients the sweeps write straight into the result."""
        if self.method == "scan" and x.ndim == 4 and not self._tracks(x):
            bsz, channels, height, width = x.shape
            out = x.new_empty(bsz, 4 * channels, height, width)
            parts = self._run(x, out)
            for i in (1, 3):  # up and down were computed in place; right and left live in a transposed layout
                out[:, i * channels:(i + 1) * channels].copy_(parts[i])
            return out
        return torch.cat(self(x), dim=1)

    def _tracks(self, x: Tensor) -> bool:
        return torch.is_grad_enabled() and (x.requires_grad or any(p.requires_grad for p in self.parameters()))

    def _run(self, x: Tensor, out: Tensor | None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        names = ("up", "right", "down", "left")
        relu0 = self.boundary_relu
        if self.method == "doubling" and x.ndim == 4:
            return self._run_doubling(x)
        if self.method == "export" and x.ndim == 4:
            return self._run_export(x)
        if self.method != "scan" or x.ndim != 4:
            return tuple(  # type: ignore[return-value]
                irnn_sweep(x, *self._params(name), dim=DIRECTIONS[name][0], reverse=DIRECTIONS[name][1],
                           boundary_relu=relu0, method=self.method) for name in names)
        _check(x, *self._params("up"), 2)
        channels = x.shape[1]
        # Sweeps along H use x as it is; sweeps along W use its transpose (a copy once when gradients are tracked,
        # else read through the view by the first pass of each sweep).
        xt = x.transpose(2, 3)
        if self._tracks(x):
            xt, out = xt.contiguous(), None
        parts = []
        for i, name in enumerate(names):
            dim, reverse = DIRECTIONS[name]
            slot = out[:, i * channels:(i + 1) * channels] if out is not None and dim == 2 else None
            res = sweep_scan(x if dim == 2 else xt, *self._params(name), reverse=reverse, boundary_relu=relu0,
                             out=slot)
            parts.append(res if dim == 2 else res.transpose(2, 3))
        return tuple(parts)  # type: ignore[return-value]

    def _run_export(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """The four sweeps as two scans (the form ``derain export`` uses, :func:`sweep_export`): up and down
        together along H (up on the image flipped upside down), left and right together along W (on the
        transpose, left flipped), each pair stacked along the channels. Same values as four loops."""
        _check(x, *self._params("up"), 2)
        channels = x.shape[1]
        (wu, bu), (wr, br), (wd, bd), (wl, bl) = (self._params(name) for name in ("up", "right", "down", "left"))
        relu0 = self.boundary_relu
        vertical = sweep_export(torch.cat([x.flip(2), x], dim=1), torch.cat([wu, wd]), torch.cat([bu, bd]),
                                boundary_relu=relu0)
        xt = x.transpose(2, 3)
        horizontal = sweep_export(torch.cat([xt.flip(2), xt], dim=1), torch.cat([wl, wr]), torch.cat([bl, br]),
                                  boundary_relu=relu0).transpose(2, 3)
        return (vertical[:, :channels].flip(2), horizontal[:, channels:], vertical[:, channels:],
                horizontal[:, :channels].flip(3))

    def _run_doubling(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """The four sweeps as one doubling scan (the form ``derain export`` uses): each sweep's input is flattened
        so that it runs forwards along the last dim, H*W positions long (sweeps along H on the transpose), and the
        four are stacked along the channels. Same values as four :func:`sweep_doubling` calls, in a graph four
        times smaller."""
        _check(x, *self._params("up"), 2)
        bsz, channels, height, width = x.shape
        if max(height, width) > 2**DOUBLING_STEPS:
            raise ValueError(f"the doubling scan covers at most {2**DOUBLING_STEPS} positions, got {height}x{width}")
        xt = x.transpose(2, 3)
        seqs = (xt.flip(3), x, xt, x.flip(3))  # up, right, down, left: each sweeps its last dim upwards
        flat = torch.cat([s.reshape(bsz, channels, -1) for s in seqs], dim=1)
        along_h = torch.arange(height, device=x.device).expand(width, height).reshape(1, -1)
        along_w = torch.arange(width, device=x.device).expand(height, width).reshape(1, -1)
        position = torch.cat([p.expand(channels, -1) for p in (along_h, along_w, along_h, along_w)])
        names = ("up", "right", "down", "left")
        w, b = (torch.cat(parts).view(1, -1, 1) for parts in zip(*(self._params(name) for name in names), strict=True))
        up, right, down, left = _doubling(flat, w, b, position, boundary_relu=self.boundary_relu,
                                          steps=DOUBLING_STEPS).chunk(4, dim=1)
        return (up.reshape(bsz, channels, width, height).flip(3).transpose(2, 3),
                right.reshape(bsz, channels, height, width),
                down.reshape(bsz, channels, width, height).transpose(2, 3),
                left.reshape(bsz, channels, height, width).flip(3))
