"""Would other per-image features make a better gate? A study on the gate's own training images (no file shipped).

``derain.default``'s gate is a logistic classifier on 16 per-image numbers
(:func:`derain.archs.prenet.gate_features`). This benchmark runs a pair on the same training images
``scripts/make_default.py`` fits its gate on (BSDS500 photos after the 8 validation ones, each rain-free and with
``diverse`` rain at the gate's seeds; never a test set), computes those 16 features and six more, each with a
physical reason, and reports, cross-validated by photo, what a gate on the 16 features plus each new one gives:
the mean gain on the rainy images (dB) and the pooled PSNR of the rain-free ones (the validation suite's two
figures). The six:

- ``stage_change``: how much the last stage still changes the output, relative to what was removed;
- ``chroma``: the colour of what was removed (rain is grey), relative to its size;
- ``edge_corr``: the correlation of the removed layer's size with the output's edges (removing texture follows
  edges; rain does not);
- ``vert_autocorr``: the removed layer's autocorrelation 3 px down less 3 px across (streaks run down);
- ``kurtosis``: the log kurtosis of the removed layer (rain is sparse);
- ``pos_share``: among the removed layer's largest 1 %, the share that brightened the input (rain adds light).

It also prints three bounds: every rain layer removed in full, an oracle that knows which images are rain-free,
and one that knows each image's best share.

    python benchmarks/gate_study.py --pair derain.default --photos 240 --save ~/derain-runs/gate_study.pt

``--load FILE`` redoes the cross-validation from saved features without running the networks (about 10 minutes
for 240 photos on 2 CPU cores). docs/training.md, stage 8, has the numbers for ``derain.default``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
import torch.nn.functional as F

from derain.archs.prenet import gate_features
from derain.data.sets import resolve_images
from derain.data.synthetic import add_rain, generator, load_textures
from derain.data.training import clean_files
from derain.errors import DerainError
from derain.io import read_image
from derain.metrics import psnr
from derain.train.gate import fit_logistic, gated_psnr, share_terms
from derain.train.model import load_network

NEW = ("stage_change", "chroma", "edge_corr", "vert_autocorr", "kurtosis", "pos_share")


def new_features(x: torch.Tensor, before_last: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """The six candidate features (see the module's docstring) of one image (1, 3, H, W), as (6,)."""
    removed = x - out
    grey = removed.mean(1, keepdim=True)
    size = grey.abs().mean() + 1e-6
    y = out.mean(1, keepdim=True)
    edges = (F.pad((y[..., :, 1:] - y[..., :, :-1]).abs(), (0, 1))
             + F.pad((y[..., 1:, :] - y[..., :-1, :]).abs(), (0, 0, 0, 1)))
    edge_corr = torch.corrcoef(torch.stack([grey.abs().flatten(), edges.flatten()]))[0, 1].nan_to_num()
    z = grey - grey.mean()
    energy = (z * z).mean().clamp(min=1e-12)
    vertical = (z[..., 3:, :] * z[..., :-3, :]).mean() / energy - (z[..., :, 3:] * z[..., :, :-3]).mean() / energy
    kurtosis = ((z ** 4).mean() / energy ** 2).clamp(min=1e-6, max=1e4).log()
    flat = grey.flatten()
    largest = flat[flat.abs() >= flat.abs().quantile(0.99)]
    return torch.stack([(out - before_last).abs().mean() / size, (removed - grey).abs().mean() / size, edge_corr,
                        vertical, kurtosis, (largest > 0).float().mean()])


def collect(pair_name: str, photos: int) -> dict[str, torch.Tensor]:
    """Features, labels ("the output beats the input") and share terms of ``photos`` training photos, each
    rain-free and rainy (rain-free first), through the pair with its router and without its gate."""
    kind, _, pair = load_network(pair_name)
    if kind != "prn_pair":
        raise SystemExit(f"--pair {pair_name}: {kind!r} weights have no gate; name a prn_pair such as derain.default")
    pair.eval()
    root, never = resolve_images("bsds500")  # as make_default.py: after the 8 validation photos, no Rain100 truth
    files, textures = clean_files(root, drop=never)[8:8 + photos], load_textures(resolve_images("rain_streaks")[0])
    base, new, labels, terms = [], [], [], []
    with torch.no_grad():
        for k, path in enumerate(files, start=8):
            clean = read_image(path).image
            rainy = add_rain(clean[0], style="diverse", g=generator("gate", k), textures=textures)[0][None]
            for x in (clean, rainy):
                stages = pair(x, heavy=pair.route(x)).stages
                before_last, out = stages[-2].clamp(0, 1), stages[-1].clamp(0, 1)
                gain = (psnr((out * 255).round() / 255, clean, data_range=1.0, y_channel=True)
                        - psnr(x, clean, data_range=1.0, y_channel=True))
                base.append(gate_features(x, out)[0])
                new.append(new_features(x, before_last, out))
                labels.append(float(gain > 0))
                terms.append(share_terms(x, out, clean)[0])
            print(f"{k - 7} of {len(files)} photos", flush=True)
    return {"base": torch.stack(base), "new": torch.stack(new), "labels": torch.tensor(labels),
            "terms": torch.stack(terms)}


def scores(terms: torch.Tensor, share: torch.Tensor) -> tuple[float, float]:
    """(mean gain on the rainy images in dB, pooled PSNR of the rain-free ones) of the gated outputs; the images
    alternate rain-free, rainy."""
    gated, alone = gated_psnr(terms, share), gated_psnr(terms, torch.zeros_like(share))
    pooled = -10 * torch.log10((10 ** (-gated[0::2] / 10)).mean())
    return float((gated - alone)[1::2].mean()), float(pooled)


def cross_validated(x: torch.Tensor, labels: torch.Tensor, folds: int) -> torch.Tensor:
    """Each image's gate share from a classifier fitted without its photo (both of its images held out)."""
    photo = torch.arange(len(labels)) // 2
    share = torch.zeros(len(labels), dtype=torch.float64)
    for fold in range(folds):
        held = photo % folds == fold
        share[held] = fit_logistic(x[~held], labels[~held])(x[held]).double()
    return share


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pair", default="derain.default", help="a prn_pair: a catalog name or a weight file")
    parser.add_argument("--photos", type=int, default=240)
    parser.add_argument("--folds", type=int, default=10)
    parser.add_argument("--save", type=Path, metavar="FILE", help="write the features to FILE (.pt)")
    parser.add_argument("--load", type=Path, metavar="FILE", help="read features written by --save instead")
    args = parser.parse_args()
    if args.save and args.save.exists():
        parser.error(f"--save {args.save}: the file exists; remove it or name another")
    if args.load and not args.load.is_file():
        parser.error(f"--load {args.load}: no such file; write one with --save first")
    torch.set_num_threads(2)
    if args.load:
        try:
            data = torch.load(args.load, weights_only=True)
        except Exception:  # not a torch file: one line, no traceback
            data = None
        if not isinstance(data, dict) or not {"base", "new", "labels", "terms"} <= set(data):
            parser.error(f"--load {args.load}: not a file written by --save")
    else:
        try:
            data = collect(args.pair, args.photos)
        except DerainError as error:  # an unknown weight name, unreadable data: one line, no traceback
            parser.exit(2, f"gate_study.py: error: {error}\n")
    if args.save:
        torch.save(data, args.save)
    base, new, labels, terms = data["base"].float(), data["new"].float(), data["labels"].float(), data["terms"]
    folds = min(args.folds, len(labels) // 2)
    if folds < 2 or labels.min() == labels.max():
        raise SystemExit("too few images to cross-validate (both labels needed, two photos at least): raise --photos")
    oracle = torch.arange(len(labels), dtype=torch.float64) % 2  # rain-free images left alone, rainy in full

    def line(label: str, share: torch.Tensor) -> str:
        gain, pooled = scores(terms, share)
        return f"{label:<36s}{gain:+.3f} / {pooled:.2f}"

    print(f"{len(labels)} images, {int(labels.sum())} helped by the network; rainy gain (dB) / rain-free pooled (dB)")
    print(line("every rain layer removed in full", torch.ones_like(oracle)))
    print(line("oracle (knows the rain-free ones)", oracle))
    a, b = terms[:, 0].double(), terms[:, 1].double()
    print(line("oracle (the best share per image)", torch.where(a > 0, b / a.clamp(min=1e-30), 0.0).clamp(0, 1)))
    print(f"{folds}-fold cross-validated gates:")
    print(line("  the 16 features", cross_validated(base, labels, folds)))
    for i, name in enumerate(NEW):
        print(line(f"  + {name}", cross_validated(torch.cat([base, new[:, i:i + 1]], 1), labels, folds)))
    print(line("  + all six", cross_validated(torch.cat([base, new], 1), labels, folds)))

if __name__ == "__main__":
    main()
