"""docs/real_photos.png: real rainy photos (no ground truth) through several weight sets, side by side.

Rows: photos of the ``real_rain`` set (SPANet's Real_Internet photos, fetched by name); columns: the rainy photo,
then each weight set at the photo's own scale (they are ~500x360, the training scale).

    python scripts/real_photos.py --photos 005 029 071 101 138 170 --weights derain.default spanet.real sian.rain100h
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
import torch.nn.functional as F

import derain
from derain.data.sets import resolve_images
from derain.io import read_image, write_image

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", nargs="+", required=True, help="file stems of the real_rain set")
    parser.add_argument("--weights", nargs="+", required=True)
    parser.add_argument("--height", type=int, default=240, help="row height in the figure")
    parser.add_argument("-o", "--output", type=Path, default=ROOT / "docs" / "real_photos.png")
    args = parser.parse_args()

    folder, _ = resolve_images("real_rain")
    restorers = [derain.load(w, device="cpu") for w in args.weights]
    rows = []
    for stem in args.photos:
        x = read_image(folder / f"{stem}.png").image
        cells = [x] + [r(x, scale=1) for r in restorers]
        w = round(x.shape[-1] * args.height / x.shape[-2])
        cells = [F.interpolate(c, size=(args.height, w), mode="bilinear", antialias=True, align_corners=False)
                 for c in cells]
        gap = torch.ones(1, 3, args.height, 6)
        rows.append(torch.cat([t for c in cells for t in (c, gap)][:-1], dim=3))
    width = max(r.shape[-1] for r in rows)
    rows = [F.pad(r, (0, width - r.shape[-1]), value=1.0) for r in rows]
    out = torch.cat([t for r in rows for t in (r, torch.ones(1, 3, 6, width))][:-1], dim=2)
    write_image(args.output, out.clamp(0, 1), overwrite=True)
    print(f"wrote {args.output}: columns rainy, {', '.join(args.weights)}")


if __name__ == "__main__":
    main()
