"""Generalization: every weight set on five test sets of four kinds of rain, and on rain-free photos.

The sets (all by name, ``derain data list``): Rain100L and Rain100H (one renderer, light and heavy), nturain_a1
(Adobe After Effects rain over a real video), heavy_rain_haze (Li et al.'s heavy rain with accumulation haze) and
spa_sample (two real rainy images whose clean image was made from the video by SPANet's method). Per set and
weight set: PSNR/SSIM (``matlab-y``, output rounded to 8 bits, scale 1), the gain over the untouched input (mean
PSNR of the outputs minus mean PSNR of the inputs, same images), the share of images the model made worse than
its input, and the brightness bias (per-channel mean of output - ground truth). The **suite score** is the mean
over sets of the gain, each set weighted equally (``suite``: all five; ``unseen``: only the sets whose training
split the weights were not trained on). The **rain-free check** feeds the clean ground truths of the five sets
(held out from derain's own training: the Rain100 ones are the 91 BSDS500 photos derain never trains on) and
reports the output's PSNR against its input (``matlab-y``, rounded), pooled (:func:`pooled`: the PSNR of the mean
squared error, so that images left exactly as they were, +inf dB each, do not make the mean infinite, and a few
damaged ones show), and the share left unchanged: 45 dB or more is "does no harm".

    python benchmarks/generalization.py --weights derain.default spanet.real          # every 5th of the large sets
    python benchmarks/generalization.py --every 10 --json generalization.json          # every weight set
    python benchmarks/generalization.py --weights derain.default --every 1             # all images
    python benchmarks/generalization.py --weights derain.default --strength 1          # without its gate

Test sets measure, they never choose (DESIGN.md rule 12): nothing printed here may set a parameter of training.
Official files come from $DERAIN_WEIGHTS or are downloaded on first use; ones that cannot be loaded are listed
as skipped with the reason.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

import derain
from derain.data import PairedFolder
from derain.inference.restorer import Strength, check_strength
from derain.metrics import measure
from derain.weights import CATALOG

SETS = ("rain100L", "rain100H", "nturain_a1", "heavy_rain_haze", "spa_sample")
LARGE = {"rain100L", "rain100H", "nturain_a1"}  # thinned by --every; the small sets are always measured whole
NO_HARM_DB = 45.0


def trained_on(name: str) -> set[str]:
    """The test sets whose training split (or, for real rain, whose data set) a record was trained on."""
    data = CATALOG[name].training_data if name in CATALOG else ""
    out = set()
    if "RainTrainL" in data or "Rain100L training" in data:
        out.add("rain100L")
    if "RainTrainH" in data or "Rain100H training" in data:
        out.add("rain100H")
    if "SPA-Data" in data:
        out.add("spa_sample")
    return out


def score(out: torch.Tensor, target: torch.Tensor) -> tuple[float, float]:
    p, s = measure(out, target, protocol="matlab-y", quantize="round")
    return float(p), float(s)


@dataclass
class SetScore:
    psnr: float
    ssim: float
    input_psnr: float
    gain: float               # psnr - input_psnr (dB)
    worse: float              # share of images with a lower PSNR than their input
    bias: list[float]         # per channel, mean of (output - ground truth)
    images: int
    trained_on: bool


@dataclass
class Row:
    weights: str
    training_data: str
    sets: dict[str, SetScore] = field(default_factory=dict)
    rain_free: dict[str, float] = field(default_factory=dict)   # set -> pooled PSNR of output vs its clean input
    unchanged: dict[str, float] = field(default_factory=dict)   # set -> share of rain-free images left identical
    seconds: float = 0.0

    @property
    def suite(self) -> float:
        return sum(s.gain for s in self.sets.values()) / len(self.sets)

    @property
    def unseen(self) -> float:
        gains = [s.gain for s in self.sets.values() if not s.trained_on]
        return sum(gains) / len(gains) if gains else float("nan")

    @property
    def rain_free_psnr(self) -> float:
        """:func:`pooled` over the sets (each set's pooled PSNR weighted equally)."""
        return pooled(list(self.rain_free.values())) if self.rain_free else float("nan")

    @property
    def rain_free_unchanged(self) -> float:
        return sum(self.unchanged.values()) / len(self.unchanged) if self.unchanged else float("nan")


def pooled(psnrs: list[float]) -> float:
    """The PSNR of the mean squared error over images (from their PSNRs; an identical image, +inf dB, counts as
    error 0): unlike the mean of the PSNRs it is not made infinite by images left exactly as they were, and it is
    never above that mean, so a few damaged images show."""
    mse = sum(10 ** (-p / 10) for p in psnrs) / len(psnrs)
    return -10 * math.log10(mse) if mse > 0 else math.inf


def rain_free_cell(psnr: float, unchanged: float) -> str:
    return f"{psnr:.2f}" + (f", {100 * unchanged:.0f}% unchanged" if unchanged else "")


def pick(name: str, every: int) -> list:
    pairs = PairedFolder(name)
    step = every if name in LARGE else 1
    return [pairs[i] for i in range(0, len(pairs), step)]


def clean_images(name: str, every: int) -> list[torch.Tensor]:
    pairs = PairedFolder(name)
    return [pairs[i].clean for i in range(0, len(pairs), every)]


def input_scores(data: dict[str, list]) -> dict[str, list[float]]:
    return {name: [score(p.rainy[None], p.clean[None])[0] for p in pairs] for name, pairs in data.items()}


def measure_weights(restorer: derain.Restorer, name: str, data: dict[str, list], inputs: dict[str, list[float]],
                    rain_free: dict[str, list[torch.Tensor]], strength: Strength = "auto") -> Row:
    seen = trained_on(name)
    row = Row(name, CATALOG[name].training_data.split(" (")[0] if name in CATALOG else "(a file)")
    t0 = time.perf_counter()
    for set_name, pairs in data.items():
        ps, ss, bias = [], [], torch.zeros(3, dtype=torch.float64)
        for pair in pairs:
            out = restorer(pair.rainy[None], scale=1, strength=strength)
            p, s = score(out, pair.clean[None])
            ps.append(p)
            ss.append(s)
            bias += (out[0] - pair.clean).mean(dim=(1, 2)).double()
        base = inputs[set_name]
        n = len(pairs)
        row.sets[set_name] = SetScore(
            psnr=sum(ps) / n, ssim=sum(ss) / n, input_psnr=sum(base) / n, gain=(sum(ps) - sum(base)) / n,
            worse=sum(p < b for p, b in zip(ps, base, strict=True)) / n,
            bias=[round(float(b), 4) for b in bias / n], images=n, trained_on=set_name in seen)
    for set_name, images in rain_free.items():
        psnrs = [score(restorer(x[None], scale=1, strength=strength), x[None])[0] for x in images]
        row.rain_free[set_name] = pooled(psnrs)
        row.unchanged[set_name] = sum(math.isinf(p) for p in psnrs) / len(psnrs)
    row.seconds = time.perf_counter() - t0
    return row


def table(rows: list[Row], inputs: dict[str, list[float]], data: dict[str, list]) -> str:
    head = ["weights", "trained on", *(f"{s} ({len(data[s])})" for s in data), "suite", "unseen", "rain-free"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    cells = [f"{sum(v) / len(v):.2f}" for v in inputs.values()]
    lines.append(f"| rainy input | | {' | '.join(cells)} | 0 | 0 | |")
    for r in rows:
        sets = [f"{'*' if s.trained_on else ''}{s.psnr:.2f} / {s.ssim:.4f}, {s.gain:+.2f}, {100 * s.worse:.0f}% worse"
                for s in r.sets.values()]
        lines.append(f"| {r.weights} | {r.training_data} | {' | '.join(sets)} | {r.suite:+.2f} | {r.unseen:+.2f} | "
                     f"{rain_free_cell(r.rain_free_psnr, r.rain_free_unchanged)} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", nargs="*", default=None,
                        help="catalog names or files (default: every catalog record)")
    parser.add_argument("--strength", default="auto",
                        help="auto (each model's own: derain.default's gate) or 0 to 1 (that share of the rain layer)")
    parser.add_argument("--every", type=int, default=5,
                        help="every Nth image of Rain100L/H and nturain_a1 (1: all); the small sets are whole")
    parser.add_argument("--sets", nargs="+", choices=SETS, default=list(SETS))
    parser.add_argument("--rain-free-every", type=int, default=10,
                        help="every Nth clean ground truth of each set for the rain-free check (0: skip it)")
    parser.add_argument("--json", type=Path, default=None, help="also write every figure here")
    args = parser.parse_args(argv)
    try:
        args.strength = check_strength(args.strength)
    except derain.DerainError as exc:
        parser.error(str(exc))
    if args.every < 1 or args.rain_free_every < 0:
        parser.error("--every must be 1 or more and --rain-free-every 0 or more")

    torch.set_grad_enabled(False)
    data = {name: pick(name, args.every) for name in args.sets}
    inputs = input_scores(data)
    rain_free = {name: clean_images(name, args.rain_free_every) for name in args.sets} if args.rain_free_every else {}
    names = args.weights or derain.list_weights()
    rows, skipped = [], []
    for name in names:
        try:
            restorer = derain.load(name, device="cpu")
        except derain.DerainError as exc:
            skipped.append(f"{name}: {' '.join(str(exc).split())[:160]}")
            print(f"skipped {name}: {skipped[-1]}", file=sys.stderr, flush=True)
            continue
        rows.append(measure_weights(restorer, name, data, inputs, rain_free, args.strength))
        r = rows[-1]
        print(f"{name}: suite {r.suite:+.2f} dB, unseen {r.unseen:+.2f} dB, rain-free "
              f"{rain_free_cell(r.rain_free_psnr, r.rain_free_unchanged)} dB "
              f"({r.seconds:.0f} s)", file=sys.stderr, flush=True)
        if args.json:  # after every weight set, so that a long run stopped early keeps what it measured
            write_json(args.json, args, inputs, rows, skipped)
    print(table(rows, inputs, data))
    print(f"\nmatlab-y, rounded, scale 1; cells: PSNR / SSIM, gain over the input (dB), share of images worse than "
          f"the input; * = trained on that set's training split; suite = mean gain over the {len(data)} sets, "
          f"unseen = over the sets not trained on; rain-free = PSNR of the output against its rain-free input "
          f"(pooled over {sum(len(v) for v in rain_free.values())} clean ground truths: the PSNR of the mean squared "
          f"error, the sets weighted equally; share left identical; {NO_HARM_DB:g} dB = no harm).")
    for line in skipped:
        print(f"skipped: {line}")
    if args.json:
        write_json(args.json, args, inputs, rows, skipped)
    return 0


def write_json(path: Path, args: argparse.Namespace, inputs: dict[str, list[float]], rows: list[Row],
               skipped: list[str]) -> None:
    path.write_text(json.dumps({
        "every": args.every, "rain_free_every": args.rain_free_every, "strength": args.strength,
        "input": {k: sum(v) / len(v) for k, v in inputs.items()},
        "images": {k: len(v) for k, v in inputs.items()},
        "rows": [{**asdict(r), "suite": r.suite, "unseen": r.unseen, "rain_free_psnr": r.rain_free_psnr,
                  "rain_free_unchanged": r.rain_free_unchanged}
                 for r in rows], "skipped": skipped}, indent=2) + "\n")


if __name__ == "__main__":
    sys.exit(main())
