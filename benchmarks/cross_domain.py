"""Every weight set on the test sets it was not trained on (and ours on both): PSNR/SSIM (matlab-y, rounded to 8
bits, scale 1) and the brightness bias, the per-channel set mean of (clamped output - ground truth).

The official models were trained on RainTrainL/H (Rain100L/H's training splits), Rain12600 or real rain; none of
them saw BSDS500 photos with our synthetic rain, and ours saw no Rain100 image. "Not trained on" here means the
test set's own training split was not in the record's training data.

    python benchmarks/cross_domain.py --every 5                  # every 5th image: 20 per set
    python benchmarks/cross_domain.py --weights derain.default sian.rain100h --every 1 --json out.json
    python benchmarks/cross_domain.py --weights derain.default --sets rain100L --every 1       # one set

Official files come from $DERAIN_WEIGHTS or are downloaded on first use; missing ones are reported and skipped.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

import derain
from derain.data import PairedFolder
from derain.metrics import measure
from derain.weights import CATALOG
from generalization import trained_on  # benchmarks/ is on sys.path when a script here runs

SETS = ("rain100L", "rain100H")


def measure_set(restorer: derain.Restorer, pairs: list, quantize: str) -> dict[str, float | list[float]]:
    ps, ss, bias, secs = [], [], torch.zeros(3, dtype=torch.float64), []
    for pair in pairs:
        t0 = time.perf_counter()
        out = restorer.run(pair.rainy[None]).image.clamp(0, 1)
        secs.append(time.perf_counter() - t0)
        p, s = measure(out, pair.clean[None], protocol="matlab-y", quantize=quantize)
        ps.append(float(p))
        ss.append(float(s))
        bias += (out[0] - pair.clean).mean(dim=(1, 2)).double()
    n = len(pairs)
    return {"psnr": sum(ps) / n, "ssim": sum(ss) / n, "bias": [round(float(b), 4) for b in bias / n],
            "images": n, "seconds": sum(secs) / n, "per_image": {"psnr": ps, "ssim": ss}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", nargs="*", default=None, help="records (default: every one with a file)")
    parser.add_argument("--every", type=int, default=5, help="every Nth image of each set (1: all 100)")
    parser.add_argument("--all-sets", action="store_true", help="also the sets a record was trained on")
    parser.add_argument("--sets", nargs="+", choices=SETS, default=list(SETS), help="which test sets")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    names = args.weights or [n for n in derain.list_weights() if not n.startswith("jdnet")]
    sets = {name: [PairedFolder(name)[i] for i in range(0, 100, args.every)] for name in args.sets}
    results: dict[str, dict] = {}
    print(f"| weights | trained on | {' | '.join(sets)} |")
    print(f"|---|---|{'---|' * len(sets)}")
    cells = []
    for set_name, pairs in sets.items():
        scores = [measure(p.rainy[None], p.clean[None], protocol="matlab-y", quantize="round") for p in pairs]
        psnr, ssim = (sum(float(s[k]) for s in scores) / len(scores) for k in (0, 1))
        results.setdefault("rainy input", {})[set_name] = {"psnr": psnr, "ssim": ssim, "images": len(pairs)}
        cells.append(f"{psnr:.2f} / {ssim:.4f}")
    print(f"| rainy input | | {' | '.join(cells)} |", flush=True)
    for name in names:
        try:
            restorer = derain.load(name, device="cpu")
        except derain.DerainError as exc:
            print(f"| {name} | skipped: {exc} |")
            continue
        seen = trained_on(name)
        record = CATALOG[name]
        row = {}
        for set_name, pairs in sets.items():
            if set_name in seen and not args.all_sets:
                row[set_name] = None
                continue
            row[set_name] = measure_set(restorer, pairs, record.quantize)
        results[name] = {"trained_on": sorted(seen), **row}
        cells = []
        for set_name in sets:
            r = row[set_name]
            cells.append("(trained on it)" if r is None else
                         f"{r['psnr']:.2f} / {r['ssim']:.4f}, bias {'/'.join(f'{b:+.3f}' for b in r['bias'])}")
        print(f"| {name} | {record.training_data.split(' (')[0]} | {' | '.join(cells)} |", flush=True)
    if args.json:
        args.json.write_text(json.dumps({"every": args.every, "results": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
