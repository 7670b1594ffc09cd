"""SPANet's real-rain method (Wang et al., CVPR 2019, §3): a clean image from a static-camera rain video.

Rain streaks brighten a pixel for a frame or two, so over N frames each pixel's background is its most frequent
(mode) intensity. The paper takes, per pixel, the *mode percentile range*: the ranks, in the pixel's sorted
values, that hold the mode value (Eq. 2-3); it then picks one global rank p that falls inside the most pixels'
ranges, and the clean image is every pixel's value at rank p (Eq. 4). One global rank keeps neighbouring pixels
consistent, where a per-pixel mode would be noisy.

Streaming: frames are never all in memory. Each frame adds one count per pixel and channel to a histogram of 256
bins (uint8 counts for N <= 255: 708 MB for 1280x720 colour; int16 beyond); mode, ranges, p and the rank-p values
are read off the histogram's cumulative counts, in row bands. Clipped values (255) are not taken as a pixel's
mode unless the pixel is never below 255: dense rain can saturate a bright pixel in most frames. The same
histogram gives the baselines of the paper's Table 1 (per-pixel median and plain mode); the mean comes from a
running sum.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import Tensor

from derain.errors import InputError

MAX_FRAMES = 32767
_BAND_ROWS = 16


@dataclass(frozen=True)
class CleanEstimate:
    clean: Tensor        # (3, H, W) float32 in [0, 1]: the value at the global rank p
    rank: int            # the global rank k (1..N) the clean image takes
    p: float             # k / N, the global percentile
    coverage: float      # share of pixel-channels whose mode percentile range holds k
    frames: int          # N
    mean: Tensor         # baselines of the paper's Table 1, (3, H, W)
    median: Tensor
    mode: Tensor


def _to_uint8(frame: Tensor) -> Tensor:
    """(1, 3, H, W) or (3, H, W) float in [0, 1] -> (H, W, 3) uint8."""
    x = frame[0] if frame.ndim == 4 else frame
    return (x.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).contiguous()


class TemporalHistogram:
    """Per-pixel, per-channel histograms of 8-bit values over frames, plus a running sum."""

    def __init__(self, height: int, width: int, *, max_frames: int = 255) -> None:
        if not 2 <= max_frames <= MAX_FRAMES:
            raise InputError(f"max_frames must be in 2..{MAX_FRAMES}, got {max_frames}")
        self.shape = (height, width)
        self.max_frames = max_frames
        dtype = torch.uint8 if max_frames <= 255 else torch.int16
        self.counts = torch.zeros(height * width * 3, 256, dtype=dtype)
        self.total = torch.zeros(height * width * 3, dtype=torch.float64)
        self.frames = 0
        self._base = torch.arange(height * width * 3, dtype=torch.int64) * 256

    def add(self, frame: Tensor) -> None:
        values = _to_uint8(frame)
        if tuple(values.shape[:2]) != self.shape:
            raise InputError(f"frame {self.frames + 1} is {values.shape[1]}x{values.shape[0]}, the sequence is "
                             f"{self.shape[1]}x{self.shape[0]}; all frames of a sequence must have one size")
        if self.frames >= self.max_frames:
            raise InputError(f"this histogram was made for at most {self.max_frames} frames")
        flat = values.reshape(-1)
        self.counts.view(-1).index_put_((self._base + flat.long(),), torch.ones(1, dtype=self.counts.dtype),
                                        accumulate=True)
        self.total += flat.double()
        self.frames += 1

    def _bands(self) -> Iterable[tuple[slice, Tensor]]:
        width3 = self.shape[1] * 3
        for top in range(0, self.shape[0], _BAND_ROWS):
            rows = slice(top * width3, min(top + _BAND_ROWS, self.shape[0]) * width3)
            yield rows, self.counts[rows].cumsum(dim=1, dtype=torch.int16)

    def _image(self, flat: Tensor) -> Tensor:
        h, w = self.shape
        return flat.view(h, w, 3).permute(2, 0, 1).float() / 255

    def estimate(self) -> CleanEstimate:
        """Mode percentile ranges, the global rank, and the clean image (paper Eq. 2-4)."""
        n = self.frames
        if n < 2:
            raise InputError(f"a clean estimate needs at least 2 frames, got {n}")
        size = self.counts.shape[0]
        mode = torch.empty(size, dtype=torch.int64)
        votes = torch.zeros(n + 2, dtype=torch.int64)
        for rows, cum in self._bands():
            # the most frequent value (lowest on ties); clipped 255s carry no information and dense rain can make
            # them the most frequent value, so they count only where a pixel is never below 255
            band = self.counts[rows]
            m = torch.where(band[:, 255] < self.frames, band[:, :255].argmax(dim=1), torch.full_like(band[:, 0], 255,
                                                                                                   dtype=torch.int64))
            mode[rows] = m
            below = torch.where(m > 0, cum.gather(1, (m - 1).clamp_min(0)[:, None])[:, 0], torch.zeros_like(m,
                                dtype=cum.dtype)).long()
            upto = cum.gather(1, m[:, None])[:, 0].long()
            # ranks below+1 .. upto hold the mode value: +1 at the first, -1 after the last
            votes += torch.bincount(below + 1, minlength=n + 2) - torch.bincount(upto + 1, minlength=n + 2)
        held = votes.cumsum(0)[1:n + 1]
        k = int(held.argmax()) + 1
        median_rank = (n + 1) // 2
        clean = torch.empty(size, dtype=torch.int64)
        median = torch.empty(size, dtype=torch.int64)
        for rows, cum in self._bands():
            clean[rows] = (cum >= k).to(torch.uint8).argmax(dim=1)
            median[rows] = (cum >= median_rank).to(torch.uint8).argmax(dim=1)
        mean = (self.total / n).float().view(*self.shape, 3).permute(2, 0, 1) / 255
        return CleanEstimate(self._image(clean), k, k / n, float(held[k - 1]) / size, n, mean, self._image(median),
                             self._image(mode))


def clean_from_frames(frames: Iterable[Tensor], *, limit: int | None = None) -> CleanEstimate:
    """The clean estimate of (up to ``limit``) frames, streamed one at a time."""
    hist: TemporalHistogram | None = None
    for frame in frames:
        if hist is None:
            x = frame[0] if frame.ndim == 4 else frame
            hist = TemporalHistogram(int(x.shape[-2]), int(x.shape[-1]), max_frames=limit or 255)
        hist.add(frame)
        if limit is not None and hist.frames >= limit:
            break
    if hist is None:
        raise InputError("the sequence holds no frames")
    if limit is not None and hist.frames < limit:
        raise InputError(f"the sequence has {hist.frames} frames, fewer than the {limit} needed; "
                         "use a longer video or a smaller N")
    return hist.estimate()


def _grey_small(frame: Tensor, factor: int = 2) -> Tensor:
    x = frame[0] if frame.ndim == 4 else frame
    grey = x.float().mean(dim=0)
    h, w = grey.shape[0] // factor * factor, grey.shape[1] // factor * factor
    return grey[:h, :w].reshape(h // factor, factor, w // factor, factor).mean(dim=(1, 3))


def _mad(a: Tensor, b: Tensor, dy: int, dx: int) -> float:
    """Median absolute difference of the overlap of ``a`` and ``b`` moved by (dy, dx) (robust to rain)."""
    h, w = a.shape
    ya, yb = (slice(0, h - dy), slice(dy, h)) if dy >= 0 else (slice(-dy, h), slice(0, h + dy))
    xa, xb = (slice(0, w - dx), slice(dx, w)) if dx >= 0 else (slice(-dx, w), slice(0, w + dx))
    return float((b[yb, xb] - a[ya, xa]).abs().median())


def frame_shift(reference: Tensor, frame: Tensor, *, factor: int = 2) -> tuple[int, int]:
    """Global translation (dy, dx) in pixels of ``frame`` against ``reference``: the phase-correlation peak (on
    ``factor``-times down-sampled grey images, so a multiple of ``factor``), kept only when it explains the
    frame better than no shift (median absolute difference at least 30% lower), so rain does not fake motion."""
    a, b = _grey_small(reference, factor), _grey_small(frame, factor)
    fa, fb = torch.fft.rfft2(a - a.mean()), torch.fft.rfft2(b - b.mean())
    cross = fa.conj() * fb
    corr = torch.fft.irfft2(cross / cross.abs().clamp_min(1e-9), s=a.shape)
    idx = int(corr.argmax())
    dy, dx = divmod(idx, a.shape[1])
    dy = dy - a.shape[0] if dy > a.shape[0] // 2 else dy
    dx = dx - a.shape[1] if dx > a.shape[1] // 2 else dx
    if (dy, dx) == (0, 0) or _mad(a, b, dy, dx) > 0.7 * _mad(a, b, 0, 0):
        return 0, 0
    return dy * factor, dx * factor


def rain_density(frames: list[Tensor], *, threshold: float = 8 / 255) -> float:
    """The share of pixels brighter than their temporal median by more than ``threshold`` (grey), per frame."""
    grey = torch.stack([(f[0] if f.ndim == 4 else f).float().mean(dim=0) for f in frames])
    median = grey.median(dim=0).values
    return float((grey - median > threshold).float().mean())


def frames_for_density(density: float) -> int:
    """N as the paper chooses it: 20 frames for sparse rain, 100 for normal, 200 for dense. The density
    thresholds (5% and 25% of pixels brightened, :func:`rain_density`) separate the sparse, normal and dense
    synthetic videos of ``benchmarks/realrain.py``."""
    if density < 0.05:
        return 20
    if density < 0.25:
        return 100
    return 200


def rain_mask_from(rainy: Tensor, clean: Tensor, *, threshold: float = 8 / 255) -> Tensor:
    """Binary mask (1, H, W): where the rainy frame is brighter than the clean image by more than ``threshold``
    in any channel."""
    x = rainy[0] if rainy.ndim == 4 else rainy
    return ((x - clean) > threshold).any(dim=0, keepdim=True).float()
