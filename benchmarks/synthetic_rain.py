"""How close the synthetic rain styles come to the benchmarks' rainy inputs, and how fast they are.

Prints, per style, the Y-PSNR of synthetic rainy vs clean over BSDS500 photos (the Rain100 ground truths left out)
beside the same figure for the real Rain100L / Rain100H inputs, the share of pixels the rain mask marks, and the
time to make one 481x321 rainy image (median). ``--figure PATH`` also writes a picture: rows of real Rain100L,
synthetic light, real Rain100H, synthetic heavy (made from ../shared data: keep it out of the repository).

    python benchmarks/synthetic_rain.py [--images 40] [--figure /tmp/synthetic_vs_real.png]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from derain.data import PairedFolder
from derain.data.synthetic import add_rain, load_textures
from derain.data.training import clean_files
from derain.io import read_image, write_image
from derain.metrics import psnr

SHARED = Path(os.environ.get("DERAIN_SHARED", Path(__file__).resolve().parent.parent.parent / "shared"))
REAL = {"light": "rain100L", "heavy": "rain100H"}


def _y_psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(psnr(a[None], b[None], data_range=1.0, y_channel=True))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=40, help="BSDS500 photos per style")
    parser.add_argument("--figure", type=Path, default=None, help="write a real-vs-synthetic picture here")
    args = parser.parse_args()

    textures = load_textures(SHARED / "data" / "rain_streaks" / "streaks")
    files = clean_files(SHARED / "data" / "bsds500" / "clean",
                        exclude=SHARED / "data" / "bsds500" / "overlap_with_Rain100.tsv")
    files = files[:: max(1, len(files) // args.images)][: args.images]
    rows, tiles = [], []
    print(f"{'style':<7} {'synthetic Y-PSNR (mean / median)':>34} {'real input (mean)':>22} {'mask':>6} {'s/image':>8}")
    for style in ("light", "heavy"):
        values, cover, times = [], [], []
        for k, path in enumerate(files):
            clean = read_image(path).image[0]
            t0 = time.perf_counter()
            rainy, mask = add_rain(clean, style=style, seed=k, textures=textures)
            times.append(time.perf_counter() - t0)
            values.append(_y_psnr(rainy, clean))
            cover.append(float(mask.mean()))
            if k < 4:
                tiles.append((style, rainy))
        real = PairedFolder(SHARED / "data" / REAL[style])
        real_values = [_y_psnr(real[i].rainy, real[i].clean) for i in range(len(real))]
        rows.append((style, values, real_values))
        print(f"{style:<7} {statistics.mean(values):>20.2f} / {statistics.median(values):>5.2f} dB "
              f"{statistics.mean(real_values):>15.2f} dB ({REAL[style]}) {statistics.mean(cover):>5.1%} "
              f"{statistics.median(times):>8.3f}")
    if args.figure is not None:
        def fit(x: torch.Tensor) -> torch.Tensor:
            return F.interpolate(x[None], size=(160, 240), mode="bilinear", align_corners=False)[0]
        lines = []
        for style in ("light", "heavy"):
            real = PairedFolder(SHARED / "data" / REAL[style])
            lines.append(torch.cat([fit(real[i * 25].rainy) for i in range(4)], dim=2))
            lines.append(torch.cat([fit(x) for s, x in tiles if s == style], dim=2))
        write_image(args.figure, torch.cat(lines, dim=1), overwrite=True)
        print(f"figure: {args.figure} (rows: real Rain100L, synthetic light, real Rain100H, synthetic heavy)")


if __name__ == "__main__":
    main()
