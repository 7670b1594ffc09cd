"""Which rain a model leaves: the share of the added rain layer still in its output, by how bright the rain is.

Compares real test rain (Rain100L or Rain100H, every 20th image) with derain's synthetic rain of one style on
held-out BSDS500 photos (the first validation photos of training, never trained on). For each brightness bin of
the added layer (rainy - clean, channel mean), it prints sum(output - clean) / sum(rainy - clean) over the pixels
in the bin: 0% is all removed, 100% all left.

    python benchmarks/rain_left.py --weights derain.default ~/derain-runs/jdnet_light/checkpoint.pt
    python benchmarks/rain_left.py --weights derain.default --data rain100H --style heavy
"""

from __future__ import annotations

import argparse

import torch

import derain
from derain.data import PairedFolder
from derain.data.sets import resolve_images
from derain.data.synthetic import add_rain, generator, load_textures
from derain.data.training import clean_files
from derain.io import read_image

BINS = (0.05, 0.1, 0.2, 0.3, 0.5, 1.0)


def share_left(restorer: derain.Restorer, pairs: list[tuple[torch.Tensor, torch.Tensor]]) -> list[float]:
    left = torch.zeros(len(BINS) - 1, dtype=torch.float64)
    added = torch.zeros(len(BINS) - 1, dtype=torch.float64)
    for rainy, clean in pairs:
        out = restorer(rainy[None], scale=1).clamp(0, 1)[0]
        rain, rest = (rainy - clean).mean(0), (out - clean).mean(0)
        for k in range(len(BINS) - 1):
            where = (rain >= BINS[k]) & (rain < BINS[k + 1])
            left[k] += rest[where].sum()
            added[k] += rain[where].sum()
    return (left / added.clamp_min(1e-12)).tolist()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", nargs="+", default=[derain.DEFAULT_WEIGHTS])
    parser.add_argument("--data", default="rain100L", choices=("rain100L", "rain100H"))
    parser.add_argument("--style", default="light", help="the synthetic rain style to compare with")
    parser.add_argument("--images", type=int, default=5, help="images of each kind")
    args = parser.parse_args()

    test = PairedFolder(args.data)
    real = [(test[i].rainy, test[i].clean) for i in range(0, len(test), max(1, len(test) // args.images))]
    root, never = resolve_images("bsds500")
    textures = load_textures(resolve_images("rain_streaks")[0])
    synthetic = []
    for k, path in enumerate(clean_files(root, drop=never)[:args.images]):
        clean = read_image(path).image[0]
        rainy, _ = add_rain(clean, style=args.style, g=generator("rain_left", k, args.style), textures=textures)
        synthetic.append((rainy, clean))
    bins = " | ".join(f"{BINS[k]:g}–{BINS[k + 1]:g}" for k in range(len(BINS) - 1))
    print(f"| weights | rain | {bins} |")
    print(f"|---|---|{'---|' * (len(BINS) - 1)}")
    for name in args.weights:
        restorer = derain.load(name, device="cpu")
        for label, pairs in ((args.data, real[:args.images]), (f"ours, {args.style}", synthetic)):
            cells = " | ".join(f"{100 * v:.0f}%" for v in share_left(restorer, pairs))
            print(f"| {name} | {label} | {cells} |", flush=True)


if __name__ == "__main__":
    main()
