"""docs/real_photos.png and docs/highres_real.png: real rainy photos (no ground truth) through several weight sets,
side by side, each column labelled with what made it.

``real_rain`` (SPANet's Real_Internet photos, ~500x360, the training scale): each photo whole, every weight set at
scale 1, rows shrunk to ``--height``. ``real_rain_large`` (1280-1920 px wide, streaks several pixels wide): every
weight set at ``--scale auto`` (derain's default for large images), a ``--crop`` square shown at full resolution.

    python scripts/real_photos.py --photos 002 026 053 079 103 144 \\
        --weights derain.default spanet.real prenet.rain100h
    python scripts/real_photos.py --set real_rain_large --weights derain.default spanet.real prenet.rain100h \\
        -o docs/highres_real.png
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont

import derain
from derain.data.sets import resolve_images
from derain.io import from_tensor, list_images, read_image, to_tensor

ROOT = Path(__file__).resolve().parent.parent
GAP = 6


def labelled(columns: list[str], rows: list[list[torch.Tensor]], *, font_size: int = 18) -> torch.Tensor:
    """A grid of (1, 3, H, W) cells (all of one size within a column and a row), white gaps, and a header band
    naming each column."""
    widths = [c.shape[-1] for c in rows[0]]
    grid = []
    for row in rows:
        height = row[0].shape[-2]
        parts = [t for c in row for t in (c, torch.ones(1, 3, height, GAP))][:-1]
        grid += [torch.cat(parts, dim=3), torch.ones(1, 3, GAP, sum(widths) + GAP * (len(widths) - 1))]
    body = torch.cat(grid[:-1], dim=2)
    font = ImageFont.load_default(size=font_size)
    header = Image.new("RGB", (body.shape[-1], font_size + 12), "white")
    draw = ImageDraw.Draw(header)
    left = 0
    for name, width in zip(columns, widths, strict=True):
        text_width = draw.textlength(name, font=font)
        draw.text((left + max(0, (width - text_width) / 2), 5), name, fill="black", font=font)
        left += width + GAP
    return torch.cat([to_tensor(np.asarray(header)), body], dim=2)


def fit(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """``x`` shrunk to fit a ``height`` x ``width`` box (aspect kept), centred on white."""
    k = min(height / x.shape[-2], width / x.shape[-1])
    h, w = round(x.shape[-2] * k), round(x.shape[-1] * k)
    x = F.interpolate(x, size=(h, w), mode="bilinear", antialias=True, align_corners=False)
    top, left = (height - h) // 2, (width - w) // 2
    return F.pad(x, (left, width - w - left, top, height - h - top), value=1.0)


def crop_box(x: torch.Tensor, side: int) -> tuple[slice, slice]:
    """A ``side`` square around the image's centre (rain shows best at full resolution)."""
    h, w = x.shape[-2:]
    side = min(side, h, w)
    top, left = (h - side) // 2, (w - side) // 2
    return slice(top, top + side), slice(left, left + side)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--set", default="real_rain", choices=("real_rain", "real_rain_large"))
    parser.add_argument("--photos", nargs="*", default=None, help="file stems (default: every photo of the set)")
    parser.add_argument("--weights", nargs="+", required=True)
    parser.add_argument("--height", type=int, default=240, help="real_rain: row height in the figure")
    parser.add_argument("--crop", type=int, default=360, help="real_rain_large: side of the full-resolution crop")
    parser.add_argument("-o", "--output", type=Path, default=ROOT / "docs" / "real_photos.png")
    args = parser.parse_args()

    torch.set_grad_enabled(False)
    folder, _ = resolve_images(args.set)
    files = list_images(folder)
    if args.photos:
        files = [f for f in files if f.stem in set(args.photos)]
    restorers = [derain.load(w, device="cpu") for w in args.weights]
    rows = []
    for path in files:
        x = read_image(path).image
        if args.set == "real_rain":
            cells = [fit(c, args.height, round(args.height * 1.5)) for c in [x] + [r(x, scale=1) for r in restorers]]
        else:
            box = crop_box(x, args.crop)
            cells = [x[..., box[0], box[1]]] + [r(x, scale="auto")[..., box[0], box[1]] for r in restorers]
        rows.append([c.clamp(0, 1) for c in cells])
    columns = ["rainy input", *args.weights]
    figure = labelled(columns, rows)
    Image.fromarray(from_tensor(figure)).save(args.output, optimize=True)
    print(f"wrote {args.output}: {len(rows)} photos; columns {', '.join(columns)}")


if __name__ == "__main__":
    main()
