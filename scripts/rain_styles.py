"""docs/rain_styles.png: the synthetic rain styles on clean training photos, beside real rainy photos.

Rows: clean BSDS500 training photos (never the 91 Rain100 ground truths: ``resolve_images("bsds500")`` names them),
each rendered whole at its own scale, then shown as a 1:1 crop; columns: the clean photo, ``light``, ``heavy``,
``rainmix`` (the validation suite's second renderer), ``photoshop`` (the tutorials' recipe), ``downpour`` (the
physical model's heavy rain lit by one source; the suite's third), ``downpour_varied`` (the same with each drop at
its own depth and oscillating; stage 26) and several draws of ``diverse``. The last
rows: real rainy photos of the ``real_rain`` set (no ground truth), 1:1 crops of the same size, for comparison by
eye only (nothing is measured on them).

    DERAIN_DATA=/work/shared/data python scripts/rain_styles.py
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from PIL import Image, ImageDraw

from derain.data.sets import resolve_images
from derain.data.synthetic import add_rain, generator, load_textures
from derain.io import list_images, read_image

ROOT = Path(__file__).resolve().parent.parent
LABEL = 18  # pixels of label strip


def _crop(x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """A centre crop (h, w) of (3, H, W), padded with grey when the image is smaller."""
    out = torch.full((3, h, w), 0.5)
    H, W = x.shape[-2:]
    top, left = max(0, (H - h) // 2), max(0, (W - w) // 2)
    part = x[:, top:top + h, left:left + w]
    out[:, :part.shape[1], :part.shape[2]] = part
    return out


def _image(x: torch.Tensor) -> Image.Image:
    return Image.fromarray((x.permute(1, 2, 0).clamp(0, 1) * 255).round().to(torch.uint8).numpy())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", type=int, default=4, help="clean training photos (rows)")
    parser.add_argument("--diverse", type=int, default=2, help="draws of the diverse style per photo")
    parser.add_argument("--real", nargs="+", default=["002", "011", "045", "053", "079", "056"],
                        help="file stems of the real_rain set (these: street, haze, forest, dense, backlit, dark)")
    parser.add_argument("--cell", type=int, nargs=2, default=(168, 128), metavar=("W", "H"),
                        help="crop size; the PNG stays under ~1.5 MB at the defaults")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("-o", "--output", type=Path, default=ROOT / "docs" / "rain_styles.png")
    args = parser.parse_args()

    cw, ch = args.cell
    clean_dir, never = resolve_images("bsds500")
    files = [p for p in list_images(clean_dir) if p.name not in never]
    step = max(1, len(files) // args.photos)
    chosen = files[step // 2::step][:args.photos]
    textures = load_textures(resolve_images("rain_streaks")[0])
    columns = ["clean", "light", "heavy", "rainmix", "photoshop", "downpour", "downpour_varied"] + [
        f"diverse #{k + 1}" for k in range(args.diverse)]
    rows: list[tuple[str, list[torch.Tensor]]] = []
    for path in chosen:
        clean = read_image(path).image[0]
        cells = [clean]
        for name in columns[1:]:
            style = name.split()[0]
            rainy, _ = add_rain(clean, style=style, g=generator("rain_styles", args.seed, path.name, name),
                                textures=textures)
            cells.append(rainy)
        rows.append((f"BSDS500 {path.stem}", [_crop(c, ch, cw) for c in cells]))
    real_dir, _ = resolve_images("real_rain")
    real = [_crop(read_image(real_dir / f"{stem}.png").image[0], ch, cw) for stem in args.real]
    per_row = len(columns)
    for k in range(0, len(real), per_row):
        rows.append((f"real rain ({', '.join(args.real[k:k + per_row])})", real[k:k + per_row]))

    row_h = ch + LABEL
    canvas = Image.new("RGB", (cw * per_row, LABEL + row_h * len(rows)), "white")
    draw = ImageDraw.Draw(canvas)
    for j, name in enumerate(columns):
        draw.text((j * cw + 4, 3), name, fill="black")
    for i, (label, cells) in enumerate(rows):
        y = LABEL + i * row_h
        draw.text((4, y + 3), label + ("  (1:1 crops of real rainy photos, no ground truth)" if
                                        label.startswith("real") else "  (1:1 crops)"), fill="black")
        for j, cell in enumerate(cells):
            canvas.paste(_image(cell), (j * cw, y + LABEL))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(args.output, optimize=True)
    print(f"wrote {args.output} ({args.output.stat().st_size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
