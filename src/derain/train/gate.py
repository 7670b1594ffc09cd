"""Fitting the small logistic models of a ``prn_pair`` (``derain.default``): its router and its gate.

Both are ``sigmoid(((features - mean) / scale) @ weight + bias)`` on a few numbers per image
(:func:`derain.archs.prenet.rain_features`, :func:`derain.archs.prenet.gate_features`); ``scripts/make_default.py``
computes the features on training photos and stores what is fitted here as the pair's buffers.

- :func:`fit_logistic`: a classifier (cross-entropy on 0/1 labels), used for the router (which network restores
  an image better) and for the first gate ("does the network's output beat the input?").
- :func:`fit_share`: the gate fitted to what the benchmarks score. Its output ``s`` is the share of the rain layer
  removed, ``x + s (out - x)``; on each training image the PSNR on Y of that image against the clean photo is a
  closed form in ``s`` (:func:`share_terms`), and the fit maximises the mean of it over the images (rain-free and
  rainy alike), the 8-bit rounding of a written image included as a floor (:data:`ROUNDING_MSE`).
- :func:`fit_local`: the pair's local gate (:class:`derain.archs.prenet.LocalGate`, 2026-12-06), a per-pixel logit
  added to the image-level gate's, trained by Adam on random crops of the same images to maximise the mean PSNR on
  Y of the gated crops (the rounding floor included).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from derain.metrics import rgb_to_y

ROUNDING_MSE = 1.0 / (12 * 255 ** 2)  # the mean squared error that rounding to 8 bits adds (uniform on a step)


@dataclass(frozen=True)
class Logistic:
    """``sigmoid(((x - mean) / scale) @ weight + bias)``: the buffers a pair stores as ``{prefix}_*``."""

    mean: Tensor
    scale: Tensor
    weight: Tensor
    bias: Tensor

    def __call__(self, x: Tensor) -> Tensor:
        return torch.sigmoid(self.logits(x))

    def logits(self, x: Tensor) -> Tensor:
        return ((x - self.mean) / self.scale) @ self.weight + self.bias

    def buffers(self, prefix: str) -> dict[str, Tensor]:
        return {f"{prefix}_mean": self.mean, f"{prefix}_scale": self.scale, f"{prefix}_weight": self.weight,
                f"{prefix}_bias": self.bias}


def _standardise(x: Tensor) -> tuple[Tensor, Tensor]:
    scale = x.std(0)
    return x.mean(0), torch.where(scale > 0, scale, torch.ones_like(scale))  # a constant feature: no division by 0


def _lbfgs(params: list[Tensor], objective: object, *, line_search: str | None = None) -> None:
    opt = torch.optim.LBFGS(params, max_iter=200, line_search_fn=line_search)

    def closure() -> Tensor:
        opt.zero_grad()
        loss = objective()  # type: ignore[operator]
        loss.backward()
        return loss

    opt.step(closure)


def fit_logistic(x: Tensor, y: Tensor, *, l2: float = 1e-3) -> Logistic:
    """A logistic classifier of ``y`` (N,) in {0, 1} on features ``x`` (N, F): standardised features,
    cross-entropy plus ``l2`` times the squared weights, L-BFGS from zero (float32, as every shipped router and
    gate until 2026-12-06 was fitted, so those fits reproduce)."""
    x, y = x.float(), y.float()
    mean, scale = _standardise(x)
    z = (x - mean) / scale
    w = torch.zeros(x.shape[1], requires_grad=True)
    b = torch.zeros(1, requires_grad=True)
    _lbfgs([w, b], lambda: F.binary_cross_entropy_with_logits(z @ w + b, y) + l2 * (w * w).sum())
    return Logistic(mean, scale, w.detach(), b.detach())


def share_terms(x: Tensor, out: Tensor, clean: Tensor) -> Tensor:
    """(N, 3) the terms of the mean squared error on Y of ``x + s (out - x)`` against ``clean``, as a function of
    the share ``s``: ``mse(s) = a s^2 - 2 b s + c`` with ``a = mean(d^2)``, ``b = mean(d e)``, ``c = mean(e^2)``,
    ``d = Y(out) - Y(x)`` (what the network removes) and ``e = Y(clean) - Y(x)`` (what should be removed). Y is
    MATLAB's luma (:func:`derain.metrics.rgb_to_y`), affine in RGB, so its offset cancels."""
    yx = rgb_to_y(x.double())
    d = (rgb_to_y(out.double()) - yx).flatten(1)
    e = (rgb_to_y(clean.double()) - yx).flatten(1)
    return torch.stack([(d * d).mean(1), (d * e).mean(1), (e * e).mean(1)], dim=1)


def gated_psnr(terms: Tensor, s: Tensor) -> Tensor:
    """(N,) PSNR on Y (peak 1) of ``x + s (out - x)`` written as 8 bits, from :func:`share_terms`: the squared
    error in ``s`` plus the rounding's (:data:`ROUNDING_MSE`)."""
    a, b, c = terms.double().unbind(1)
    s = s.double()
    mse = (a * s * s - 2 * b * s + c).clamp(min=0) + ROUNDING_MSE
    return -10 * torch.log10(mse)


def fit_share(x: Tensor, terms: Tensor, *, start: Logistic | None = None, l2: float = 1e-3) -> Logistic:
    """A gate ``s = sigmoid(...)`` on features ``x`` (N, F) that maximises the mean of :func:`gated_psnr` over the
    N images (minus ``l2`` times the squared weights, on the same standardised features as :func:`fit_logistic`),
    L-BFGS from ``start`` (a classifier on the same features, e.g. "does the output beat the input?") or zero.
    The objective is not convex; starting from a classifier makes the fit deterministic and sensible."""
    x = x.double()
    mean, scale = _standardise(x) if start is None else (start.mean.double(), start.scale.double())
    z = (x - mean) / scale
    w0 = torch.zeros(x.shape[1], dtype=torch.float64) if start is None else start.weight.double()
    b0 = torch.zeros(1, dtype=torch.float64) if start is None else start.bias.double()
    w, b = w0.clone().requires_grad_(True), b0.clone().requires_grad_(True)
    _lbfgs([w, b], lambda: -gated_psnr(terms, torch.sigmoid(z @ w + b)).mean() / 10 + l2 * (w * w).sum(),
           line_search="strong_wolfe")
    return Logistic(mean.float(), scale.float(), w.detach().float(), b.detach().float())


@dataclass(frozen=True)
class GateSample:
    """One training image of a local gate: the network's input ``x``, its output ``out`` and the ``clean`` image,
    each (3, H, W), the image-level gate's ``logit`` for it (:meth:`derain.archs.prenet.PReNetPair.gate_logit`) and
    the mean squared error on Y of the whole image under that gate, ``reference`` (with the rounding's; for the
    ``"image"`` objective of :func:`fit_local`)."""

    x: Tensor
    out: Tensor
    clean: Tensor
    logit: float
    reference: float = 1.0


def _crops(samples: Sequence[GateSample], size: int, count: int, g: torch.Generator
           ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    picks = torch.randint(len(samples), (count,), generator=g).tolist()
    xs, outs, cleans, logits, refs = [], [], [], [], []
    for k in picks:
        sample = samples[k]
        h, w = sample.x.shape[-2:]
        top = int(torch.randint(h - size + 1, (1,), generator=g))
        left = int(torch.randint(w - size + 1, (1,), generator=g))
        flip = bool(torch.randint(2, (1,), generator=g))  # streaks lean either way: a mirror is as likely
        for t, into in ((sample.x, xs), (sample.out, outs), (sample.clean, cleans)):
            piece = t[:, top:top + size, left:left + size].float()
            into.append(piece.flip(-1) if flip else piece)
        logits.append(sample.logit)
        refs.append(sample.reference)
    return (torch.stack(xs), torch.stack(outs), torch.stack(cleans), torch.tensor(logits).view(-1, 1, 1, 1),
            torch.tensor(refs, dtype=torch.float64))


def fit_local(local: torch.nn.Module, samples: Sequence[GateSample], *, steps: int = 2000, crop: int = 96,
              batch: int = 16, lr: float = 1e-3, seed: int = 0, cap: float | None = None,
              objective: Literal["crop", "image"] = "crop", log: Callable[[int, float], None] | None = None) -> float:
    """Train ``local`` (a :class:`derain.archs.prenet.LocalGate`) in place: ``steps`` Adam steps (cosine-decayed
    ``lr``) on ``batch`` random ``crop`` x ``crop`` crops (mirrored at random) of ``samples``, minimising minus the
    mean PSNR on Y of ``x + s (out - x)`` against ``clean``, ``s = sigmoid(logit + local(x, out))`` (the 8-bit
    rounding's error added as a floor, as :func:`gated_psnr`); with ``cap``, each crop's PSNR counts up to ``cap``
    dB only (no reward for leaving a rain-free crop more alone than that, so rain-free crops cannot buy their
    58.9 dB ceiling with rain left on rainy ones). ``objective="image"`` serves each whole image's PSNR instead of
    the crop's: the PSNR of an image is ``-10 log10`` of its mean squared error, whose gradient weighs every crop's
    squared error by ``1 / mse(image)``; with the image's error under the image-level gate as that weight
    (``GateSample.reference``), the loss is the mean of ``mse(crop) / reference``, both at least the error of
    ``cap`` dB (a crop of a clean sky then counts as much as its image's PSNR says, not as its own 59 dB).
    ``log(step, mean crop PSNR)`` every 100 steps. Returns the mean PSNR of the last 100 steps' crops."""
    if objective not in ("crop", "image"):
        raise ValueError(f"objective must be 'crop' or 'image', got {objective!r}")
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(local.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    local.train()
    recent: list[float] = []
    for step in range(1, steps + 1):
        x, out, clean, logit, reference = _crops(samples, crop, batch, g)
        s = torch.sigmoid(logit + local(x, out, banded=False))
        err = (rgb_to_y(x + s * (out - x)) - rgb_to_y(clean)).flatten(1)
        mse = (err * err).mean(1) + ROUNDING_MSE
        psnr = -10 * torch.log10(mse)
        if objective == "image":
            floor = 0.0 if cap is None else 10 ** (-cap / 10)  # the error of cap dB: no reward below it
            loss = (mse.double().clamp(min=floor) / reference.clamp(min=floor)).mean()
        else:
            loss = -(psnr if cap is None else psnr.clamp(max=cap)).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        recent = [*recent, float(psnr.detach().mean())][-100:]
        if log is not None and step % 100 == 0:
            log(step, sum(recent) / len(recent))
    local.eval()
    return sum(recent) / len(recent)
