"""How much tiling changes each model's output, per overlap: the measurement behind the default overlaps.

For each model family (official weights where they exist; JDNet: random weights unless ``--weights
jdnet=NAME_OR_FILE`` names trained ones, e.g. a run's ``checkpoint.pt``), a Rain100H image (481x321) is derained
whole and in ``--tile`` windows for several overlaps; prints the largest and the 99.9th-percentile absolute
difference (in 8-bit levels) and marks the smallest overlap whose largest difference is at most 2/255, beside the
default overlap its family declares (``derain.archs.FAMILIES``).

    python benchmarks/tiling.py [--tile 160] [--families prenet sian spanet jdnet] [--overlaps 0 32 64]
    python benchmarks/tiling.py --families jdnet --weights jdnet=~/derain-runs/jdnet_light/checkpoint.pt
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

import derain
from derain.archs import FAMILIES
from derain.data.sets import resolve_folder
from derain.io import read_image

WEIGHTS = {"prenet": "prenet.rain100h", "sian": "sian.rain100h", "spanet": "spanet.real", "jdnet": None}
OVERLAPS = (0, 16, 32, 48, 64, 80, 96, 128)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tile", type=int, default=160)
    parser.add_argument("--families", nargs="+", default=list(WEIGHTS))
    parser.add_argument("--overlaps", type=int, nargs="+", default=list(OVERLAPS))
    parser.add_argument("--image", type=Path, default=None, help="default: Rain100H's 001.png")
    parser.add_argument("--weights", nargs="+", default=[], metavar="FAMILY=WEIGHTS",
                        help="other weights for a family: a catalog name or a file (e.g. jdnet=run/checkpoint.pt)")
    args = parser.parse_args()
    weights = dict(WEIGHTS)
    for item in args.weights:
        family, sep, name = item.partition("=")
        if not sep or family not in WEIGHTS or not name:
            parser.error(f"--weights {item!r}: expected FAMILY=WEIGHTS with FAMILY one of {', '.join(WEIGHTS)}")
        weights[family] = str(Path(name).expanduser()) if Path(name).expanduser().exists() else name
    args.image = args.image or resolve_folder("rain100H") / "rain" / "001.png"
    x = read_image(args.image).image
    print(f"image {args.image.name} {x.shape[3]}x{x.shape[2]}, tile {args.tile}; differences in 8-bit levels")
    print(f"{'family':<8} {'overlap':>7} {'max':>7} {'p99.9':>7}")
    for family in args.families:
        path = weights[family]
        if path is None:
            torch.manual_seed(0)
            restorer = derain.Restorer(derain.create_model(family), name=f"{family} (random weights)", device="cpu")
        else:
            restorer = derain.load(path, device="cpu")
            print(f"{family:<8} weights {path}")
        whole = restorer(x)
        found = None
        for overlap in args.overlaps:
            if overlap > args.tile // 2:
                break
            diff = (restorer(x, tile=args.tile, overlap=overlap) - whole).abs().flatten() * 255
            worst, p999 = float(diff.max()), float(diff.quantile(0.999))
            ok = worst <= 2.0
            found = overlap if ok and found is None else found
            print(f"{family:<8} {overlap:>7} {worst:>7.2f} {p999:>7.3f}{'  <= 2/255' if ok else ''}")
        print(f"{family:<8} smallest overlap within 2/255: {found}; default overlap: {FAMILIES[family].overlap}")


if __name__ == "__main__":
    main()
