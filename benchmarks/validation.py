"""The validation suite that training choices are made on: held-out clean training photos, never a test set.

Photos: the first ``--photos`` (8) of BSDS500 less its 91 Rain100 ground truths, in derain's order
(``derain.data.training.clean_files``): the photos every ``bsds500`` training run holds out (``data.val_count``),
so no weight set of ours trained on them. Each photo whole (481 x 321) with rain from three renderers, at
``--seeds`` seeds each: ``diverse`` (a physical model, nothing fitted to a benchmark; :mod:`derain.data.diverse`),
``rainmix`` (Garg & Nayar's rendered streaks through random augmentation chains, after Guo et al. 2021;
:mod:`derain.data.rainmix`) and ``downpour`` (the physical model's heavy rain lit by one source: dense, bright
streaks, where a heavy-rain network is needed; since stage 15, before it the suite had the first two), and the
photo itself rain-free. ``diverse`` is also what our weights are fine-tuned on; ``rainmix`` is not (only its streak
textures appear in a share of ``diverse``'s layers), so a choice that fits the training renderer shows up as a gap
between the two. The column "renderers" is the mean gain over the choosing renderers (the three above), the figure
choices are made on (docs/training.md). Per weight set:
PSNR/SSIM (``matlab-y``, rounded), the gain over the rainy input, the share of images made worse than their input,
the bias, and the rain-free PSNR (output against its clean input, pooled as in ``generalization.py``: the PSNR of
the mean squared error; the minimum; the share left identical; 45 dB = no harm). With several weight sets, each
after the first is compared with it photo by photo: the mean difference (that of the "renderers" column), its
standard error over photos and how many photos gained, so that a margin can be read against its noise.
``--styles`` picks the renderers; others are for information (``light`` and ``heavy`` were fitted to Rain100L/H's
statistics, so they are shown, never used to choose).

Two checks since stage 17 (docs/training.md), each a gap the suite had: ``rainmix_dense`` (in the default
``--styles``, not in the "renderers" mean) is dense rain from the renderer no network of ours trains on, so a heavy
network fine-tuned on one kind of dense rain shows what it loses on another; and for a light/heavy pair (a model
with a router) the column "rain-free, heavy forced" runs the same rain-free photos through the heavy network (the
gate still applies), so a router that sends a clean photo there, as it may on photos the suite does not have, is
judged by what that network does to it rather than passing because these 8 photos go to the light one.
Since stage 25 a second dense check, ``photoshop_dense`` (shown, outside the mean and outside stage 17's rule): the
image-editing tutorials' recipe at two to four layers, whose streaks (noise through a motion blur) share nothing
with the heavy network's training rain, where ``rainmix_dense`` shares Garg & Nayar's streak textures with
``downpour`` and ``diverse`` (their texture slabs). The router may send a dense check's images to the light network
(it sends ``photoshop_dense``'s there, stage 25), so for a pair the column "dense, heavy forced" gives each dense
check's gain with the router bypassed, as for the rain-free photos: what the heavy network does on dense rain it
did not train on (shown; stage 26's rule reads the ``photoshop_dense`` one).

``--rule stage17`` ends with the verdict of the rule stages 17 to 25 chose by (docs/training.md, "Stage 17"), each
candidate against the first weight set: a candidate qualifies if (1) its rain-free PSNR is at least 45 dB pooled,
(2) its "rain-free, heavy forced" is no lower than the first's, (3) its ``rainmix_dense`` gain is no lower and (4)
its renderers mean is at most 0.10 dB lower; it replaces the first if it also beats it by more than 0.05 dB on (2),
(3) or the renderers mean, the highest renderers mean among such candidates. ``--rule stage26`` (stage 26 on) adds
(5): a pair's ``photoshop_dense`` gain with its heavy network forced is no lower than the first's (compared only
where both are pairs), and being ahead on it by more than 0.05 dB is a margin too. ``--rule stage30`` (stage 30
on, pairs only) weighs the two held-out dense checks the same: (1), (2) and (4) as before, (3) ``rainmix_dense``
routed at most 0.10 dB lower, and (5) the mean of the two dense checks with the heavy network forced more than
0.05 dB higher, the highest such mean winning. The figures are compared unrounded. A rule is written down
before its candidates are measured; this prints it, it does not choose one.

    python benchmarks/validation.py --weights derain.default ~/derain-runs/new/best.safetensors
    python benchmarks/validation.py --seeds 4 --rule stage26 --weights derain.default ~/derain-runs/cand.safetensors
"""

from __future__ import annotations

import argparse
import functools
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

import derain
from derain.data.sets import resolve_images
from derain.data.synthetic import add_rain, generator, load_textures
from derain.data.training import clean_files
from derain.io import read_image
from derain.metrics import measure
from generalization import pooled, rain_free_cell  # benchmarks/ is on sys.path when a script here runs

CHOOSING = ("diverse", "rainmix", "downpour")  # the renderers choices are made on: the mean of their gains
GUARDS = ("rainmix_dense", "photoshop_dense")  # shown beside them by default, outside the mean: held-out dense rain
READINGS = ("photoshop_crossed",)  # dense rain shown only when asked for (--styles), forced too; no rule reads it


def heavy_forced(restorer: derain.Restorer) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """For a light/heavy pair (a model with a router): the pair's output as if its router had sent every image to
    the heavy network (that network's whole output, then the pair's gate: ``restorer.finish``); None otherwise."""
    heavy = getattr(restorer.model, "heavy", None)
    if getattr(restorer.model, "route", None) is None or heavy is None:
        return None
    alone = derain.Restorer(heavy, name=f"{restorer.name}:heavy", device=restorer.device)
    return lambda x: restorer.finish(x, alone(x, scale=1, strength=1))


def mean_gain(run: Callable[[torch.Tensor], torch.Tensor], pairs: list[tuple[torch.Tensor, torch.Tensor]],
              base: list[float]) -> float:
    """The mean PSNR gain of ``run`` over the rainy inputs of ``pairs`` (whose own PSNRs are ``base``)."""
    return sum(score(run(x[None]), c[None])[0] - b for (x, c), b in zip(pairs, base, strict=True)) / len(pairs)


def score(out: torch.Tensor, target: torch.Tensor) -> tuple[float, float]:
    p, s = measure(out, target, protocol="matlab-y", quantize="round")
    return float(p), float(s)


def suite(photos: int, seeds: int, styles: list[str]) -> tuple[dict[str, list[tuple[torch.Tensor, torch.Tensor]]],
                                                              list[torch.Tensor]]:
    root, never = resolve_images("bsds500")
    files = clean_files(root, drop=never)[:photos]
    textures = load_textures(resolve_images("rain_streaks")[0])
    clean = [read_image(f).image[0] for f in files]
    rainy = {style: [(add_rain(c, style=style, g=generator("validation-suite", style, seed, k),
                               textures=textures)[0], c) for k, c in enumerate(clean) for seed in range(seeds)]
             for style in styles}
    return rainy, clean


def rain_free(run: Callable[[torch.Tensor], torch.Tensor], clean: list[torch.Tensor]) -> tuple[float, str]:
    """Each clean photo through ``run``, scored against itself: the pooled PSNR and the cell (pooled; share left
    identical; the minimum)."""
    free = [score(run(c[None]), c[None])[0] for c in clean]
    unchanged = sum(math.isinf(p) for p in free) / len(free)
    return pooled(free), f"{rain_free_cell(pooled(free), unchanged)} (min {min(free):.2f})"


@dataclass(frozen=True)
class Row:
    """What a rule reads of one weight set's row, unrounded: the renderers mean gain, the ``rainmix_dense`` gain, the
    rain-free PSNR (pooled) and, for a pair, the same with its heavy network forced and the ``photoshop_dense`` and
    ``rainmix_dense`` gains with its heavy network forced (None for a single network)."""

    renderers: float
    dense: float
    rain_free: float
    forced: float | None
    held_out: float | None = None
    forced_dense: float | None = None  # the ``rainmix_dense`` gain with the heavy network forced (stage 30)


RAIN_FREE_FLOOR = 45.0  # dB pooled: no harm (issue 31)
RENDERERS_SLACK = 0.10  # dB a candidate's renderers mean may fall below the reference's
MARGIN = 0.05  # dB by which a candidate must beat the reference on one of (2), (3) or the renderers mean


def conditions(reference: Row, row: Row, *, dense_slack: float) -> list[str]:
    """The failed conditions (1) to (4) that stages 17, 26 and 30 share: (1) rain-free at least 45 dB pooled, (2) the
    heavy-forced rain-free figure no lower (where both have one), (3) the ``rainmix_dense`` gain at most
    ``dense_slack`` dB lower, (4) the renderers mean at most 0.10 dB lower."""
    fails = []
    if not row.rain_free >= RAIN_FREE_FLOOR:
        fails.append(f"(1) rain-free {row.rain_free:.2f} < {RAIN_FREE_FLOOR:.0f}")
    if row.forced is not None and reference.forced is not None and not row.forced >= reference.forced:
        fails.append(f"(2) heavy forced {row.forced:.2f} < {reference.forced:.2f}")
    if not row.dense >= reference.dense - dense_slack:
        fails.append(f"(3) rainmix_dense {row.dense:+.3f} < {reference.dense:+.3f}" if not dense_slack else
                     f"(3) rainmix_dense {row.dense:+.3f} more than {dense_slack:.2f} dB below {reference.dense:+.3f}")
    if not row.renderers >= reference.renderers - RENDERERS_SLACK:
        fails.append(f"(4) renderers {row.renderers:+.3f} more than {RENDERERS_SLACK:.2f} dB below "
                     f"{reference.renderers:+.3f}")
    return fails


def stage17(reference: Row, candidates: dict[str, Row], *, held_out: bool = False) -> list[str]:
    """Stage 17's rule (docs/training.md), each candidate against ``reference``: one line per candidate naming the
    conditions it fails or its margins, then the verdict. Forced figures are compared only where both have one.
    ``held_out``: stage 26's rule, stage 17's with a fifth condition and margin (:func:`stage26`)."""
    lines, winners = [], {}
    for name, row in candidates.items():
        streaks = held_out and row.held_out is not None and reference.held_out is not None
        both = row.forced is not None and reference.forced is not None
        fails = conditions(reference, row, dense_slack=0.0)
        if streaks and not row.held_out >= reference.held_out:
            fails.append(f"(5) photoshop_dense, heavy forced {row.held_out:+.3f} < {reference.held_out:+.3f}")
        margins = [what for what, ahead in (("(2)", both and row.forced - reference.forced > MARGIN),
                                            ("(3)", row.dense - reference.dense > MARGIN),
                                            ("(5)", streaks and row.held_out - reference.held_out > MARGIN),
                                            ("renderers", row.renderers - reference.renderers > MARGIN)) if ahead]
        if fails:
            lines.append(f"- {name}: does not qualify: {'; '.join(fails)}")
        elif not margins:
            lines.append(f"- {name}: qualifies, but beats the reference by more than {MARGIN} dB on none of (2), "
                         f"(3){', (5)' if held_out else ''} or the renderers")
        else:
            winners[name] = row.renderers
            lines.append(f"- {name}: qualifies, ahead by more than {MARGIN} dB on {', '.join(margins)}")
    best = max(winners, key=winners.__getitem__) if winners else None
    lines.append(f"Verdict: {best} replaces the reference" if best else "Verdict: the reference stays")
    return lines


def stage26(reference: Row, candidates: dict[str, Row]) -> list[str]:
    """Stage 26's rule (docs/training.md): stage 17's, and (5) a pair's ``photoshop_dense`` gain with its heavy
    network forced no lower than the reference's, which also counts as a margin. ``photoshop_dense``'s streaks
    share nothing with the heavy network's training rain, so this holds that network to dense rain it has not seen;
    the router sends those images to the light network, hence the forced figure."""
    return stage17(reference, candidates, held_out=True)


def stage30(reference: Row, candidates: dict[str, Row]) -> list[str]:
    """Stage 30's rule (docs/training.md): the two held-out dense checks weigh the same. For pairs: (1) rain-free
    at least 45 dB pooled, (2) heavy forced no lower, (3) ``rainmix_dense`` routed at most 0.10 dB lower, (4) the
    renderers mean at most 0.10 dB lower, and (5) the mean of the two dense checks with the heavy network forced
    (``rainmix_dense``, ``photoshop_dense``) more than 0.05 dB higher; among those, the highest (5) mean wins."""
    def held(row: Row) -> float | None:
        return None if row.held_out is None or row.forced_dense is None else (row.held_out + row.forced_dense) / 2

    lines, winners = [], {}
    ref_held = held(reference)
    for name, row in candidates.items():
        row_held = held(row)
        if ref_held is None or row_held is None or row.forced is None or reference.forced is None:
            lines.append(f"- {name}: not judged: stage 30's rule compares light/heavy pairs (a router to bypass)")
            continue
        fails = conditions(reference, row, dense_slack=RENDERERS_SLACK)
        if not row_held - ref_held > MARGIN:
            fails.append(f"(5) dense, heavy forced, mean {row_held:+.3f} not more than {MARGIN} dB above "
                         f"{ref_held:+.3f}")
        if fails:
            lines.append(f"- {name}: does not qualify: {'; '.join(fails)}")
        else:
            winners[name] = row_held
            lines.append(f"- {name}: qualifies: dense, heavy forced, mean {row_held:+.3f} against {ref_held:+.3f}")
    best = max(winners, key=winners.__getitem__) if winners else None
    lines.append(f"Verdict: {best} replaces the reference" if best else "Verdict: the reference stays")
    return lines


RULES: dict[str, Callable[[Row, dict[str, Row]], list[str]]] = {"stage17": stage17, "stage26": stage26,
                                                                 "stage30": stage30}
NEEDS = {"stage17": (*CHOOSING, "rainmix_dense"), "stage26": (*CHOOSING, *GUARDS),
         "stage30": (*CHOOSING, *GUARDS)}  # the renderers each rule reads


def paired(a: list[float], b: list[float]) -> str:
    """The mean of ``a - b`` over photos, its standard error (photos are the independent units: a photo's seeds and
    renderers share its content) and how many photos gained; for reading a margin, never for moving a rule's."""
    d = [x - y for x, y in zip(a, b, strict=True)]
    mean = sum(d) / len(d)
    se = math.sqrt(sum((x - mean) ** 2 for x in d) / (len(d) - 1) / len(d)) if len(d) > 1 else math.nan
    return f"{mean:+.3f} dB, standard error {se:.3f} over {len(d)} photos, {sum(x > 0 for x in d)} of {len(d)} better"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", nargs="+", required=True, help="catalog names or weight files")
    parser.add_argument("--photos", type=int, default=8, help="held-out photos (the runs hold out the first 8)")
    parser.add_argument("--seeds", type=int, default=2, help="rainy versions of each photo per style")
    parser.add_argument("--styles", nargs="+", default=[*CHOOSING, *GUARDS],
                        help="renderers (choices use the mean gain over 'diverse', 'rainmix' and 'downpour'; "
                             "'rainmix_dense' and 'photoshop_dense' are shown beside them; 'photoshop_crossed' "
                             "when asked for, as a reading)")
    parser.add_argument("--rule", choices=tuple(RULES),
                        help="end with this rule's verdict, each weight set after the first against the first")
    args = parser.parse_args(argv)
    if args.photos < 1 or args.seeds < 1:
        parser.error("--photos and --seeds must be 1 or more")
    needed = NEEDS.get(args.rule, ())
    if args.rule and (len(args.weights) < 2 or not set(needed) <= set(args.styles)):
        parser.error(f"--rule {args.rule} compares candidates with the first of --weights on the renderers "
                     f"{', '.join(needed)}: give two or more weight sets and keep those --styles")
    restorers = {}
    for name in args.weights:  # every name checked before the suite is rendered: a typo costs no minutes
        try:
            restorers[name] = derain.load(name, device="cpu")
        except derain.DerainError as exc:
            parser.error(f"--weights {name}: {' '.join(str(exc).split())[:300]}")

    torch.set_grad_enabled(False)
    try:
        rainy, clean = suite(args.photos, args.seeds, args.styles)
    except derain.DerainError as exc:  # the photos or textures are missing and cannot be fetched
        parser.exit(1, f"validation.py: {exc}\n")
    base = {style: [score(x[None], c[None])[0] for x, c in pairs] for style, pairs in rainy.items()}
    choosing = [s for s in rainy if s in CHOOSING]
    dense = [s for s in rainy if s in GUARDS or s in READINGS]
    head = ["weights", *(f"{s} ({len(p)})" for s, p in rainy.items()), f"renderers ({'+'.join(choosing)})",
            f"rain-free ({len(clean)})", "rain-free, heavy forced", "dense, heavy forced", "seconds"]
    print("| " + " | ".join(head) + " |\n|" + "---|" * len(head))
    print(f"| rainy input | {' | '.join(f'{sum(b) / len(b):.2f}' for b in base.values())} | | | | | |", flush=True)
    per_photo: dict[str, list[float]] = {}  # each photo's mean PSNR over the choosing renderers and seeds
    rows: dict[str, Row] = {}
    for name, restorer in restorers.items():
        t0 = time.perf_counter()
        cells, gains = [], {}
        for style, pairs in rainy.items():
            ps, ss, bias = [], [], torch.zeros(3, dtype=torch.float64)
            for x, c in pairs:
                out = restorer(x[None], scale=1)
                p, s = score(out, c[None])
                ps.append(p)
                ss.append(s)
                bias += (out[0] - c).mean(dim=(1, 2)).double()
            if style in choosing:
                photo = per_photo.setdefault(name, [0.0] * len(clean))
                for k in range(len(clean)):
                    photo[k] += sum(ps[k * args.seeds:(k + 1) * args.seeds]) / (args.seeds * len(choosing))
            n = len(pairs)
            worse = sum(p < b for p, b in zip(ps, base[style], strict=True)) / n
            gains[style] = (sum(ps) - sum(base[style])) / n
            cells.append(f"{sum(ps) / n:.2f} / {sum(ss) / n:.4f}, {(sum(ps) - sum(base[style])) / n:+.3f}, "
                         f"{100 * worse:.0f}% worse, bias {'/'.join(f'{float(b):+.3f}' for b in bias / n)}")
        renderers = sum(gains[s] for s in choosing) / len(choosing) if choosing else math.nan
        cells.append(f"{renderers:+.3f}" if choosing else "")
        free, cell = rain_free(functools.partial(restorer, scale=1), clean)
        cells.append(cell)
        forced = heavy_forced(restorer)
        forced_free, cell = rain_free(forced, clean) if forced else (None, "")
        cells.append(cell)
        forced_dense = {s: mean_gain(forced, rainy[s], base[s]) for s in dense} if forced else {}
        cells.append(", ".join(f"{s} {g:+.3f}" for s, g in forced_dense.items()))
        rows[name] = Row(renderers, gains.get("rainmix_dense", math.nan), free, forced_free,
                         forced_dense.get("photoshop_dense"), forced_dense.get("rainmix_dense"))
        print(f"| {name} | {' | '.join(cells)} | {time.perf_counter() - t0:.0f} |", flush=True)
    if len(per_photo) > 1:
        seeds = f"{args.seeds} seed{'s' if args.seeds > 1 else ''}"
        print(f"\nPaired against {args.weights[0]}, photo by photo (each photo's PSNR averaged over "
              f"{'+'.join(choosing)} and its {seeds}; the mean difference equals that of the renderers column):")
        first = per_photo[args.weights[0]]
        for name in args.weights[1:]:
            print(f"- {name}: {paired(per_photo[name], first)}")
    if args.rule:
        print(f"\nRule {args.rule} (docs/training.md), each against {args.weights[0]}, unrounded:")
        print("\n".join(RULES[args.rule](rows[args.weights[0]], {n: rows[n] for n in args.weights[1:]})))
    print("\nmatlab-y, rounded, scale 1; cells: PSNR / SSIM, gain over the input (dB, to three places, as rules "
          "compare it), share of images worse than the input, bias R/G/B; rain-free: PSNR of the output against its "
          "clean input (pooled: the PSNR of the mean squared error; share left identical; min); heavy forced: the "
          "same with a pair's router bypassed, every photo through its heavy network; dense, heavy forced: each dense "
          "check's gain with the router bypassed.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
