"""Deraining as preprocessing (JDNet §4.4, measured): does a detector see on the derained image what it saw on the
clean photo?

Data: BSDS500 clean photos (never the 91 Rain100L/H ground truths) on which the detectors fire, rained with
derain's light and heavy synthetic styles at fixed seeds. The detections on the clean photo are the reference;
recall and precision at IoU 0.5 of the same detector on the rainy image and on each weight set's derained image
(derain.downstream). Detectors: OpenCV's HOG people detector and frontal-face Haar cascade, whose weights ship in
the opencv-python-headless wheel (pip install "derain[downstream]").

    python benchmarks/downstream.py                                   # every weight set with a file, 40 photos
    python benchmarks/downstream.py --weights derain.default sian.rain100h --images 20 --json out.json
    python benchmarks/downstream.py --figure docs/downstream.png      # boxes on clean / rainy / derained
    python benchmarks/downstream.py --clean my_photos/ --images 2     # any folder of clean photos

derain.default was trained on BSDS500 clean photos (with other rain drawn on them) except the first 8, which
training holds out; the official weights never saw BSDS500. Official files come from $DERAIN_WEIGHTS or are
downloaded on first use; missing ones are reported and skipped.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

import derain
from derain.data.sets import resolve_images
from derain.data.synthetic import STYLES, add_rain, derive_seed, load_textures
from derain.data.training import clean_files
from derain.downstream import LABELS, Box, Tally, load_detector, tally, total
from derain.io import from_tensor, read_image

COLOURS = {"person": (255, 64, 32), "face": (32, 160, 255)}


def pick(detect, files: list[Path], images: int) -> list[tuple[str, np.ndarray, list[Box]]]:
    """The first ``images`` photos (natural order) on which the detector fires: ``[(name, rgb, boxes)]``."""
    out = []
    for path in files:
        rgb = from_tensor(read_image(path).image)
        boxes = detect(rgb)
        if boxes:
            out.append((path.name, rgb, boxes))
            if len(out) == images:
                break
    return out


def _cell(t: Tally) -> str:
    def pct(v: float) -> str:
        return "–" if math.isnan(v) else f"{100 * v:.0f}%"
    return f"{pct(t.recall)} / {pct(t.precision)}"


def _summary(per_image: list[Tally]) -> dict:
    t = total(per_image)
    return {"reference": t.reference, "found": t.found, "matched": t.matched,
            "recall": None if math.isnan(t.recall) else t.recall,
            "precision": None if math.isnan(t.precision) else t.precision}


def _draw(rgb: np.ndarray, boxes: list[Box], title: str) -> Image.Image:
    im = Image.fromarray(rgb)
    d = ImageDraw.Draw(im)
    for b in boxes:
        d.rectangle([b.x0, b.y0, b.x1 - 1, b.y1 - 1], outline=COLOURS[b.label], width=3)
    d.rectangle([0, 0, 8 + 7 * len(title), 16], fill=(0, 0, 0))
    d.text((4, 3), title, fill=(255, 255, 255))
    return im


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", nargs="*", default=None,
                        help="weight sets (default: every one with a file, JDNet's left out unless named)")
    parser.add_argument("--clean", default="bsds500", help="clean photos: a folder or a data set's name")
    parser.add_argument("--images", type=int, default=40, help="photos on which the detectors fire")
    parser.add_argument("--styles", nargs="*", default=list(STYLES), choices=list(STYLES))
    parser.add_argument("--figure", type=Path, default=None,
                        help="PNG: boxes on clean | rainy | derained (heavy rain, the first weight set)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    try:
        detect = load_detector()
        root, never = resolve_images(args.clean)
        files = clean_files(root, drop=never)
    except derain.DerainError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    held_out = {p.name for p in files[:8]} if args.clean == "bsds500" else set()
    photos = pick(detect, files, args.images)
    if not photos:
        print(f"error: neither detector fires on any photo in {root}; give photos with people in them (--clean)",
              file=sys.stderr)
        return 2
    counts = {label: sum(b.label == label for _, _, boxes in photos for b in boxes) for label in LABELS}
    print(f"{len(photos)} photos from {root} ({sum(n in held_out for n, _, _ in photos)} held out of "
          f"derain.default's training), reference detections: "
          + ", ".join(f"{n} {label}s" for label, n in counts.items()))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")

    textures = load_textures(resolve_images("rain_streaks")[0])
    rainy: dict[str, list[torch.Tensor]] = {
        style: [add_rain(read_image(root / name).image[0], style=style, seed=derive_seed("downstream", name, style),
                         textures=textures)[0][None] for name, _, _ in photos]
        for style in args.styles}

    names = args.weights
    if names is None:
        names = [n for n in derain.list_weights() if not n.startswith("jdnet")]
    labels = ("all", *LABELS)
    results: dict[str, dict] = {}
    figure_row: list[Image.Image] = []

    def score(outputs: list[np.ndarray]) -> tuple[dict[str, dict], list[list[Box]]]:
        per = [detect(o) for o in outputs]
        return {lab: _summary([tally(ref, found, label=None if lab == "all" else lab)
                               for (_, _, ref), found in zip(photos, per, strict=True)]) for lab in labels}, per

    header = " | ".join(f"{s}: recall / precision" for s in args.styles)
    print(f"\n| input | {header} | s / image |\n|---|{'---|' * len(args.styles)}---|")

    def row(name: str, by_style: dict[str, dict], seconds: str) -> None:
        cells = []
        for s in args.styles:
            a = by_style[s]["all"]
            cells.append(_cell(Tally(a["reference"], a["found"], a["matched"])))
        print(f"| {name} | {' | '.join(cells)} | {seconds} |", flush=True)

    rainy_scores, rainy_boxes = {}, []
    for s in args.styles:
        rainy_scores[s], rainy_boxes = score([from_tensor(x) for x in rainy[s]])  # the last style's boxes: figure
    results["rainy"] = rainy_scores
    row("rainy", rainy_scores, "")

    for name in names:
        try:
            restorer = derain.load(name, device="cpu")
        except derain.DerainError as exc:
            print(f"| {name} | skipped: {exc} |", flush=True)
            continue
        by_style, secs = {}, []
        for s in args.styles:
            outs = []
            for x in rainy[s]:
                t0 = time.perf_counter()
                y = restorer(x)
                secs.append(time.perf_counter() - t0)
                outs.append(from_tensor(y))
            by_style[s], per = score(outs)
            if s == args.styles[-1] and args.figure is not None and not figure_row:
                best = max(range(len(photos)), key=lambda i: len(photos[i][2]))
                figure_row = [_draw(photos[best][1], photos[best][2], "clean"),
                              _draw(from_tensor(rainy[s][best]), rainy_boxes[best], f"{s} rain"),
                              _draw(outs[best], per[best], name)]
        seconds = statistics.median(secs)
        results[name] = {**by_style, "seconds_per_image": seconds}
        row(name, by_style, f"{seconds:.2f}")

    for lab in LABELS:
        print(f"\n{lab}s only:", ", ".join(
            f"{n} " + "; ".join(f"{s} {_cell(Tally(**{k: r[s][lab][k] for k in ('reference', 'found', 'matched')}))}"
                                for s in args.styles)
            for n, r in results.items()))

    if args.figure is not None and figure_row:
        w, h = figure_row[0].size
        sheet = Image.new("RGB", (3 * w + 12, h), (255, 255, 255))
        for i, im in enumerate(figure_row):
            sheet.paste(im, (i * (w + 6), 0))
        args.figure.parent.mkdir(parents=True, exist_ok=True)
        sheet.save(args.figure)
        print(f"wrote {args.figure}")
    if args.json is not None:
        args.json.write_text(json.dumps({"photos": [n for n, _, _ in photos], "held_out": sorted(held_out),
                                         "reference": counts, "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
