"""SPANet's real-rain method on synthetic static-camera videos, as in the paper's Table 1, and its speed/memory.

Backgrounds: BSDS500 photos (Rain100 ground truths left out); rain: the synthetic generator without haze, for
sparse, normal and dense rain, different in every frame; sensor noise sigma 1.5 levels, 8-bit frames. Prints the
PSNR (RGB, against the true background) of the mean rainy frame and of the per-pixel mean, median, plain mode
and our method (global percentile rank), over 100-frame videos. ``--speed`` streams 300 frames of 1280x720
through the histogram and prints frames per second and peak memory.

    python benchmarks/realrain.py [--backgrounds 4] [--speed]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import time
from dataclasses import replace
from pathlib import Path

import torch

from derain.data.realrain import TemporalHistogram, clean_from_frames
from derain.data.synthetic import RainStyle, StreakParams, add_rain, generator
from derain.data.training import center_crop, clean_files
from derain.io import read_image
from derain.metrics import psnr

SHARED = Path(os.environ.get("DERAIN_SHARED", Path(__file__).resolve().parent.parent.parent / "shared"))
# The rain of these synthetic videos is fixed here (the first light and heavy styles), so that the training styles'
# calibration (derain.data.synthetic.STYLES) never moves this measurement.
_STREAKS = StreakParams(density=(0.003, 0.006), length=(8, 24), width=(0.0, 0.4), gain=(0.35, 0.75), spread=0.0)
_DENSE = StreakParams(density=(0.0015, 0.004), length=(20, 45), width=(0.3, 0.9), gain=(0.4, 0.8), spread=12.0)
_NORMAL = RainStyle(layers=(1, 1), angle=25.0, streaks=_STREAKS, haze=(0.0, 0.0), light=(0.8, 0.9), texture_chance=0.0)
KINDS = {
    "sparse": replace(_NORMAL, streaks=replace(_STREAKS, density=(0.0005, 0.001))),
    "normal": _NORMAL,
    "dense": RainStyle(layers=(2, 3), angle=20.0, streaks=_DENSE, haze=(0.0, 0.0), light=(0.75, 0.95),
                       texture_chance=0.0),
}


def _frames(bg: torch.Tensor, kind: str, key: object, n: int) -> list[torch.Tensor]:
    out = []
    for t in range(n):
        rainy, _ = add_rain(bg, style=KINDS[kind], g=generator("bench", key, kind, t))
        noisy = rainy + torch.randn(bg.shape, generator=generator("noise", key, kind, t)) * 1.5 / 255
        out.append(((noisy.clamp(0, 1) * 255).round() / 255)[None])
    return out


def table(backgrounds: int, frames: int, size: int) -> None:
    files = clean_files(SHARED / "data" / "bsds500" / "clean",
                        exclude=SHARED / "data" / "bsds500" / "overlap_with_Rain100.tsv")[::97][:backgrounds]
    print(f"{frames}-frame videos, {len(files)} backgrounds ({size}x{size} crops); PSNR (dB) vs the true background")
    print(f"{'rain':<7} {'input':>7} {'mean':>7} {'median':>7} {'mode':>7} {'ours':>7} {'p':>6}")
    for kind in KINDS:
        rows: dict[str, list[float]] = {k: [] for k in ("input", "mean", "median", "mode", "ours", "p")}
        for path in files:
            bg = (center_crop(read_image(path).image[0], size) * 255).round() / 255
            video = _frames(bg, kind, path.name, frames)
            est = clean_from_frames(video, limit=frames)

            def score(x: torch.Tensor, bg: torch.Tensor = bg) -> float:
                return min(float(psnr(x[None] if x.ndim == 3 else x, bg[None], data_range=1.0)), 99.0)

            rows["input"].append(statistics.mean(score(f) for f in video))
            for name in ("mean", "median", "mode"):
                rows[name].append(score(getattr(est, name)))
            rows["ours"].append(score(est.clean))
            rows["p"].append(est.p)
        print(f"{kind:<7}" + "".join(f" {statistics.mean(rows[k]):>7.2f}" for k in ("input", "mean", "median", "mode",
                                                                                   "ours"))
              + f" {statistics.mean(rows['p']):>6.2f}")


def speed(frames: int = 300, height: int = 720, width: int = 1280) -> None:
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
    g = torch.Generator().manual_seed(0)
    frame = torch.rand(1, 3, height, width, generator=g)
    hist = TemporalHistogram(height, width, max_frames=frames)
    start = time.perf_counter()
    for t in range(frames):
        hist.add(torch.roll(frame, shifts=t % 7, dims=3))
    adding = time.perf_counter() - start
    t0 = time.perf_counter()
    hist.estimate()
    estimate = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
    n = frames
    print(f"{n} frames of {width}x{height}: {n / adding:.1f} frames/s into the histogram, estimate {estimate:.1f} s, "
          f"peak RSS {peak:.2f} GB (start {base:.2f} GB)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backgrounds", type=int, default=4)
    parser.add_argument("--frames", type=int, default=100)
    parser.add_argument("--size", type=int, default=160)
    parser.add_argument("--speed", action="store_true")
    args = parser.parse_args()
    if args.speed:
        speed()
    else:
        table(args.backgrounds, args.frames, args.size)


if __name__ == "__main__":
    main()
