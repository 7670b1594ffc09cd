"""Build ``derain.default`` (a ``prn_pair``) from a light-rain and a heavy-rain PRN, fitting its router.

The router is a linear classifier on :func:`derain.archs.prenet.rain_features`, fitted (logistic regression,
L-BFGS, a small L2 penalty) on synthetic rain only: 200 BSDS500 training photos (never the 8 held out for
validation, never the 91 Rain100 ground truths) at fixed seeds. ``--labels styles`` (until 2026-12-05): each photo
with light and with heavy rain of the shipped styles, labelled by the style (those styles were calibrated to
Rain100L/H's statistics). ``--labels better``: each photo with ``diverse`` rain (a physical model fitted to no
test set), one in five left rain-free, labelled by which of the two networks restores it better (PSNR on Y) —
the router learns where each network helps, whatever the rain looks like; ``--router-styles diverse photoshop``
(stage 14) gives each rainy photo one image of each training renderer (``downpour``, lit heavy rain, since stage
15). (Until 2026-12-06 the script also
printed how the router sent the Rain100L/H inputs, a check that fitted nothing; it reads no test set now.)

The gate (``--gate-photos``, 240): a second logistic classifier, on :func:`derain.archs.prenet.gate_features`
(the input's rain features and what the pair removed), fitted on training photos after the router, each photo
rain-free and with diverse rain, labelled by whether the pair's output is closer to the clean photo than the input;
its probability is the share of the rain layer removed (:meth:`PReNetPair.strength`). No threshold is chosen.
``--gate-fit psnr`` (2026-12-06) refits that classifier, from where it stopped, to what the benchmarks score: the
share removed that maximises the mean PSNR on Y of the gated outputs of the same images, rain-free and rainy
(:func:`derain.train.gate.fit_share`). ``--router-from PAIR`` keeps an existing pair's router (the same fit when
the networks are that pair's) and refits only the gate. The file's ``derain.router`` metadata records every source
(``--light``, ``--heavy``, ``--router-from``, ``--gate-from``) by the name given and its file's sha256, since a
name such as ``derain.default`` means another file after the next release.

    python scripts/make_default.py --light ~/derain-runs/long/light/weights.safetensors \\
        --heavy ~/derain-runs/long/heavy/weights.safetensors -o src/derain/assets/weights/derain.default.safetensors
    python scripts/make_default.py --light derain.default:light --heavy derain.default:heavy -o /tmp/gated.safetensors
    python scripts/make_default.py --light derain.default:light --heavy derain.default:heavy \\
        --router-from derain.default --gate-fit psnr -o /tmp/share.safetensors
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

import derain
from derain.archs.prenet import rain_features
from derain.data.sets import resolve_images
from derain.data.synthetic import add_rain, generator, load_textures
from derain.data.training import clean_files
from derain.io import read_image
from derain.train.gate import ROUNDING_MSE, Logistic, fit_logistic, fit_share, gated_psnr, share_terms
from derain.train.model import load_network, split_part, warm_start
from derain.weights.store import load_weights, write_weights

RENDERERS = ("diverse", "photoshop", "downpour")  # training renderers the router's and gate's images may use


def source_sha256(weights: str) -> str:
    """The sha256 of the file ``weights`` names (a path or a catalog name; ``NAME:light``/``NAME:heavy`` name the
    pair's file): what a name meant when a file was built, since a name such as ``derain.default`` changes."""
    return load_weights(split_part(weights)[0]).sha256


def training_photos(count: int) -> tuple[list[Path], list[torch.Tensor]]:
    """``count`` BSDS500 training photos after the first 8 (training's validation photos; never the 91 Rain100
    ground truths), and the rain-streak textures."""
    root, never = resolve_images("bsds500")
    return clean_files(root, drop=never)[8:8 + count], load_textures(resolve_images("rain_streaks")[0])


def rain_generator(purpose: str, k: int, style: str) -> torch.Generator:
    """The seeded generator of photo ``k``'s ``style`` rain for ``purpose``; ``diverse`` keeps the seeds it had
    before other renderers were added, so earlier fits are reproduced."""
    return generator(purpose, k) if style == "diverse" else generator(purpose, k, style)


def synthetic_features(count: int) -> tuple[torch.Tensor, torch.Tensor]:
    files, textures = training_photos(count)
    feats, labels = [], []
    for k, path in enumerate(files):
        clean = read_image(path).image[0]
        for label, style in ((0.0, "light"), (1.0, "heavy")):
            rainy, _ = add_rain(clean, style=style, g=generator("router", k, style), textures=textures)
            feats.append(rain_features(rainy[None])[0])
            labels.append(label)
    return torch.stack(feats), torch.tensor(labels)


def better_features(count: int, light: torch.nn.Module, heavy: torch.nn.Module,
                    styles: tuple[str, ...] = ("diverse",)) -> tuple[torch.Tensor, torch.Tensor]:
    """Features of training photos, one in five rain-free and the others with rain of each of ``styles`` (one
    image per renderer; diverse alone by default, as every router until stage 14), labelled 1 where the heavy
    network restores the image better than the light one."""
    from derain.metrics import psnr

    files, textures = training_photos(count)
    feats, labels = [], []
    with torch.no_grad():
        for k, path in enumerate(files):
            clean = read_image(path).image
            inputs = [clean] if k % 5 == 4 else [
                add_rain(clean[0], style=style, g=rain_generator("router-better", k, style), textures=textures)[0][None]
                for style in styles]
            for rainy in inputs:
                scores = [float(psnr(net(rainy).image.clamp(0, 1), clean, data_range=1.0, y_channel=True))
                          for net in (light, heavy)]
                feats.append(rain_features(rainy)[0])
                labels.append(float(scores[1] > scores[0]))
    return torch.stack(feats), torch.tensor(labels)


def gate_features_of(count: int, pair: torch.nn.Module, styles: tuple[str, ...] = ("diverse",),
                     heavy_rain_free: bool = False
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[tuple[torch.Tensor, ...]], torch.Tensor]:
    """Features for the gate: training photos (after the 8 validation photos) each rain-free and with rain of each
    of ``styles`` (diverse by default), through the pair (router on, gate off), labelled 1 where its output (8-bit)
    is closer to the clean photo than the input (PSNR on Y; a rain-free photo is always labelled 0: any change
    harms it), the terms of each image's error as a function of the share removed
    (:func:`derain.train.gate.share_terms`), the images themselves ``(x, out, clean)``, each (3, H, W) float16, for
    a local gate, and which images are rain-free. ``heavy_rain_free``: each rain-free photo a second time through
    the heavy network whatever the router says (what the gate sees when a router sends a clean photo there, as it
    may on photos it was not fitted on), labelled 0 like every rain-free image."""
    from derain.archs.prenet import gate_features
    from derain.metrics import psnr

    restorer = derain.Restorer(pair, name="pair", device="cpu")
    heavy = derain.Restorer(pair.heavy, name="heavy", device="cpu")  # the pair with every image routed to it
    files, textures = training_photos(count)
    feats, labels, terms, images, rain_free = [], [], [], [], []
    with torch.no_grad():
        for k, path in enumerate(files, start=8):
            clean = read_image(path).image
            rainy = [add_rain(clean[0], style=style, g=rain_generator("gate", k, style), textures=textures)[0][None]
                     for style in styles]
            runs = [(x, restorer) for x in (clean, *rainy)] + ([(clean, heavy)] if heavy_rain_free else [])
            for x, run in runs:
                rain_free.append(x is clean)
                out = run(x, scale=1, strength=1)  # the network's whole output: the gate is what is being fitted
                gain = (psnr((out * 255).round() / 255, clean, data_range=1.0, y_channel=True)
                        - psnr(x, clean, data_range=1.0, y_channel=True))
                feats.append(gate_features(x, out)[0])
                labels.append(float(gain > 0))
                terms.append(share_terms(x, out, clean)[0])
                images.append(tuple(t[0].half() for t in (x, out, clean)))
    return torch.stack(feats), torch.tensor(labels), torch.stack(terms), images, torch.tensor(rain_free)


def train_local_gate(pair: torch.nn.Module, images: list[tuple[torch.Tensor, ...]], rain_free: torch.Tensor,
                     steps: int, cap: float | None, objective: str = "crop") -> dict[str, float]:
    """Give ``pair`` a :class:`derain.archs.prenet.LocalGate` trained on the gate's images on top of its
    image-level gate (:func:`derain.train.gate.fit_local`, seed 0, ``objective`` and ``cap`` as there); returns the
    mean PSNR of the gated images before and after (whole images, rainy and rain-free apart)."""
    from derain.archs.prenet import LocalGate
    from derain.train.gate import GateSample, fit_local

    torch.manual_seed(0)
    pair.local = LocalGate()

    def errors() -> list[float]:
        """Each image's mean squared error on Y under the pair's gate, the rounding's included."""
        out = []
        with torch.no_grad():
            for x, net, clean in images:
                gated = pair.gated(x[None].float(), net[None].float())
                out.append(float(share_terms(gated, gated, clean[None].float())[0, 2]) + ROUNDING_MSE)
        return out

    def psnr(mse: list[float]) -> tuple[float, float]:
        db = -10 * torch.log10(torch.tensor(mse, dtype=torch.float64))
        return float(db[rain_free].mean()), float(db[~rain_free].mean())

    references = errors()  # the local gate starts at zero: the image-level gate's errors
    with torch.no_grad():
        samples = [GateSample(x, out, clean, float(pair.gate_logit(x[None].float(), out[None].float())[0]), ref)
                   for (x, out, clean), ref in zip(images, references, strict=True)]
    fit_local(pair.local, samples, steps=steps, cap=cap, objective=objective,  # type: ignore[arg-type]
              log=lambda step, p: print(f"local gate step {step}: crops {p:.2f} dB", flush=True))
    before, after = psnr(references), psnr(errors())
    print(f"local gate: rain-free {before[0]:.2f} -> {after[0]:.2f} dB, rainy {before[1]:.2f} -> {after[1]:.2f} dB "
          f"(the gate's own {len(images)} training images)")
    return {"local_gate_steps": steps, "local_gate_cap": cap, "local_gate_objective": objective,
            "rain_free_before": round(before[0], 3), "rain_free_after": round(after[0], 3),
            "rainy_before": round(before[1], 3), "rainy_after": round(after[1], 3)}


def set_buffers(pair: torch.nn.Module, values: dict[str, torch.Tensor]) -> None:
    """Copy ``values`` into the pair's buffers of those names (router_*, gate_*)."""
    for name, value in values.items():
        getattr(pair, name).copy_(value)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--light", required=True)
    parser.add_argument("--heavy", required=True)
    parser.add_argument("-o", "--output", type=Path, required=True)
    parser.add_argument("--photos", type=int, default=200)
    parser.add_argument("--labels", choices=("styles", "better"), default="better",
                        help="styles: light vs heavy style (fitted to Rain100L/H); better: the network that "
                             "restores diverse rain better")
    parser.add_argument("--router-styles", nargs="+", default=["diverse"], choices=RENDERERS,
                        help="with --labels better: the training renderers of the router's rainy images, one image "
                             "of each per photo (default: diverse)")
    parser.add_argument("--router-from", metavar="PAIR",
                        help="keep this prn_pair's router (a weight file or catalog name) instead of fitting one "
                             "(it is the same fit when the two networks are that pair's)")
    parser.add_argument("--gate-photos", type=int, default=240,
                        help="training photos (each rain-free and with diverse rain) the gate is fitted on; 0: no "
                             "gate (every image's rain layer removed in full), or with --gate-from that pair's "
                             "gate kept without measuring it")
    parser.add_argument("--gate-fit", choices=("helps", "psnr"), default="helps",
                        help="helps: a classifier of 'the output beats the input', its probability the share "
                             "removed; psnr: from there, the share that maximises the mean PSNR of the gated "
                             "outputs over the same images")
    parser.add_argument("--gate-from", metavar="PAIR",
                        help="keep this prn_pair's image-level gate instead of fitting one (its gate data is "
                             "still computed when a local gate is trained)")
    parser.add_argument("--gate-heavy-rain-free", action="store_true",
                        help="the gate's rain-free photos also go through the heavy network, router bypassed (a "
                             "router may send a clean photo there): the gate learns to leave that output alone")
    parser.add_argument("--local-gate-steps", type=int, default=0, metavar="N",
                        help="also train a local gate (a per-pixel share; LocalGate) for N steps on the gate's "
                             "images; 0 (default): none")
    parser.add_argument("--gate-styles", nargs="+", default=["diverse"], choices=RENDERERS,
                        help="the training renderers of the gate's rainy images, one image of each per photo "
                             "(default: diverse)")
    parser.add_argument("--local-gate-cap", type=float, default=None, metavar="DB",
                        help="count each crop's PSNR up to DB only when training the local gate (default: no cap)")
    parser.add_argument("--local-gate-objective", choices=("crop", "image"), default="crop",
                        help="crop: the mean PSNR of the training crops; image: each crop's error weighed as its "
                             "whole image's PSNR weighs it (see derain.train.gate.fit_local)")
    parser.add_argument("--save-gate-data", type=Path, metavar="FILE",
                        help="also write the gate's training data (features, labels, share terms, images) to FILE "
                             "(.pt), to study the fit without running the networks again")
    parser.add_argument("--load-gate-data", type=Path, metavar="FILE",
                        help="read the gate's training data from a --save-gate-data FILE instead of running the "
                             "networks (it must come from the same networks and router)")
    parser.add_argument("--threads", type=int, default=1,
                        help="CPU threads (default 1, so that two fits can run side by side)")
    args = parser.parse_args()
    if args.threads < 1:
        parser.error(f"--threads {args.threads}: give 1 or more")
    if args.save_gate_data and args.save_gate_data.exists():
        parser.error(f"--save-gate-data {args.save_gate_data}: the file exists; remove it or name another")
    if args.load_gate_data and not args.load_gate_data.is_file():
        parser.error(f"--load-gate-data {args.load_gate_data}: no such file; write one with --save-gate-data")
    if args.gate_heavy_rain_free and args.load_gate_data:
        parser.error("--gate-heavy-rain-free sets which images the gate data has; it cannot change data read with "
                     "--load-gate-data: drop one of them")
    if args.local_gate_steps < 0:
        parser.error(f"--local-gate-steps {args.local_gate_steps}: give 0 (no local gate) or a number of steps")
    if args.local_gate_steps and not args.gate_photos:
        parser.error("--local-gate-steps needs the gate's images: give --gate-photos more than 0")
    if args.router_styles != ["diverse"] and (args.router_from or args.labels != "better"):
        parser.error("--router-styles sets the rain of a router fitted with --labels better; drop it with "
                     "--router-from or --labels styles")
    torch.set_num_threads(args.threads)

    pair = derain.create_model("prn_pair").eval()  # a local gate, if asked, is added once the gate is fitted
    warm_start(pair.light, args.light, "prn")  # a PRN file, or NAME:light / NAME:heavy for a pair's half
    warm_start(pair.heavy, args.heavy, "prn")
    if args.router_from:
        kind, _, source = load_network(args.router_from)
        if kind != "prn_pair":
            parser.error(f"--router-from {args.router_from}: {kind!r} weights have no router; name a prn_pair "
                         "file such as derain.default")
        set_buffers(pair, {name: getattr(source, name)
                           for name in ("router_mean", "router_scale", "router_weight", "router_bias")})
        router_info = {"router_from": str(args.router_from), "router_from_sha256": source_sha256(args.router_from)}
        print(f"router kept from {args.router_from}")
    else:
        x, y = (synthetic_features(args.photos) if args.labels == "styles"
                else better_features(args.photos, pair.light, pair.heavy, tuple(args.router_styles)))
        print(f"{int(y.sum())} of {len(y)} training images restored better by the heavy network")
        router = fit_logistic(x, y)
        set_buffers(pair, router.buffers("router"))
        accuracy = float(((router.logits(x) > 0).float() == y).float().mean())
        router_info = {"labels": args.labels, "synthetic_accuracy": round(accuracy, 4)}
        if args.labels == "better":
            router_info["router_styles"] = list(args.router_styles)
        print(f"router fitted on {len(y)} synthetic images: {accuracy:.1%} routed right")
    gate_info: dict[str, object] = {}
    if args.gate_from:
        kind, _, source = load_network(args.gate_from)
        if kind != "prn_pair":
            parser.error(f"--gate-from {args.gate_from}: {kind!r} weights have no gate; name a prn_pair file "
                         "such as derain.default")
        set_buffers(pair, Logistic(*(getattr(source, f"gate_{name}").clone()
                                     for name in ("mean", "scale", "weight", "bias"))).buffers("gate"))
        gate_info |= {"gate_from": str(args.gate_from), "gate_from_sha256": source_sha256(args.gate_from)}
        print(f"image-level gate kept from {args.gate_from}"
              + ("" if args.gate_photos else " (--gate-photos 0: not measured)"))
    if args.gate_photos:
        if args.load_gate_data:
            data = torch.load(args.load_gate_data)
            gx, gy, terms, images = data["features"], data["labels"], data["terms"], data["images"]
            # files written before --gate-styles: a rain-free image, then its diverse rain, photo by photo
            rain_free = data.get("rain_free", torch.arange(len(gy)) % 2 == 0)
            print(f"gate data read from {args.load_gate_data}")
        else:
            gx, gy, terms, images, rain_free = gate_features_of(args.gate_photos, pair, tuple(args.gate_styles),
                                                                args.gate_heavy_rain_free)
        if args.save_gate_data:
            torch.save({"features": gx, "labels": gy, "terms": terms, "images": images, "rain_free": rain_free},
                       args.save_gate_data)
        if args.gate_from:
            gate = Logistic(pair.gate_mean, pair.gate_scale, pair.gate_weight, pair.gate_bias)
        else:
            gate = fit_logistic(gx, gy)
            if args.gate_fit == "psnr":
                gate = fit_share(gx, terms, start=gate)
            set_buffers(pair, gate.buffers("gate"))
        p = gate(gx)
        none, every = gated_psnr(terms, torch.zeros_like(p)), gated_psnr(terms, torch.ones_like(p))
        gated = gated_psnr(terms, p)
        gate_info |= {"gate_photos": args.gate_photos, "gate_styles": list(args.gate_styles),
                      **({"gate_heavy_rain_free": True} if args.gate_heavy_rain_free else {}),
                     "gate_fit": args.gate_fit, "gate_helped": int(gy.sum()),
                     "gate_accuracy": round(float(((p > 0.5).float() == gy).float().mean()), 4)}
        how = f"kept from {args.gate_from}, measured" if args.gate_from else f"({args.gate_fit}) fitted"
        print(f"gate {how} on {len(gy)} training images ({int(gy.sum())} helped by the network): "
              f"{gate_info['gate_accuracy']:.1%} right at 0.5; mean strength on the rain-free ones "
              f"{float(p[rain_free].mean()):.3f}, on the rainy ones {float(p[~rain_free].mean()):.3f}")
        print(f"on these images the gated output gains {float((gated - none)[~rain_free].mean()):+.3f} dB "
              f"on the rainy ones (all the layer removed: {float((every - none)[~rain_free].mean()):+.3f}) and "
              f"is {float(gated[rain_free].mean()):.2f} dB from the rain-free ones "
              f"(all removed: {float(every[rain_free].mean()):.2f})")
        if args.local_gate_steps:
            gate_info.update(train_local_gate(pair, images, rain_free, args.local_gate_steps, args.local_gate_cap,
                                              args.local_gate_objective))
    sources = {"light_from": str(args.light), "light_sha256": source_sha256(str(args.light)),
               "heavy_from": str(args.heavy), "heavy_sha256": source_sha256(str(args.heavy))}
    write_weights(args.output, model="prn_pair", options={"local_gate": True} if pair.local is not None else {},
                  state_dict=pair.state_dict(), name="derain.default",
                  extra={"router": json.dumps({**sources, **router_info, **gate_info})})
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
