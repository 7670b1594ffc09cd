"""Weight-space interpolation of two weight sets of one architecture (robust fine-tuning, "WiSE-FT").

Wortsman et al. (CVPR 2022, "Robust fine-tuning of zero-shot models") found that interpolating the weights of a
network before and after fine-tuning, ``(1 - alpha) * before + alpha * after``, keeps most of the fine-tune's gain
on its own distribution and recovers robustness on others. Here: a network before and after a fine-tune on
``diverse`` rain, so that the result does not fit that one renderer as closely (``benchmarks/validation.py``'s
second renderer shows the gap). ``alpha`` is fixed by the user; choosing it on a test set is not allowed.

    python scripts/average_weights.py --before /tmp/stage5.safetensors:light \\
        --after ~/derain-runs/light_diverse2/weights.safetensors --alpha 0.5 -o ~/derain-runs/light_wise.safetensors

Each of ``--before``/``--after`` is a catalog name or a file, ``NAME:light`` / ``NAME:heavy`` for one network of a
pair. The two must hold the same architecture; the output is a plain weight file of it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from derain.errors import InputError
from derain.train.model import load_network
from derain.weights.store import write_weights


def interpolate(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor],
                alpha: float) -> dict[str, torch.Tensor]:
    if before.keys() != after.keys():
        raise InputError("the two weight sets have different layers: "
                         f"{sorted(before.keys() ^ after.keys())[:4]}")
    out = {}
    for key, a in before.items():
        b = after[key]
        if a.shape != b.shape:
            raise InputError(f"{key}: shapes differ ({tuple(a.shape)} vs {tuple(b.shape)})")
        out[key] = torch.lerp(a.float(), b.float(), alpha).to(a.dtype) if a.is_floating_point() else b.clone()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", required=True, help="the network before the fine-tune")
    parser.add_argument("--after", required=True, help="the network after it")
    parser.add_argument("--alpha", type=float, required=True, help="weight of --after, in [0, 1]")
    parser.add_argument("-o", "--output", type=Path, required=True)
    args = parser.parse_args(argv)
    if not 0 <= args.alpha <= 1:
        parser.error(f"--alpha must be in [0, 1], got {args.alpha}")
    if args.output.exists():
        parser.error(f"{args.output} exists; choose another output file (nothing was written)")
    try:
        (kind, options, before), (kind_after, options_after, after) = (load_network(args.before),
                                                                       load_network(args.after))
        if (kind, options) != (kind_after, options_after):
            raise InputError(f"--before holds {kind!r} weights {options}, --after {kind_after!r} {options_after}: "
                             "they must match")
        mixed = interpolate(before.state_dict(), after.state_dict(), args.alpha)
    except InputError as err:
        print(f"average_weights: {err}", file=sys.stderr)
        return 2
    write_weights(args.output, model=kind, options=options, state_dict=mixed,
                  extra={"interpolated": json.dumps({"before": args.before, "after": args.after,
                                                     "alpha": args.alpha})})
    print(f"wrote {args.output} ({kind}, {1 - args.alpha:g} x before + {args.alpha:g} x after)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
