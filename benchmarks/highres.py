"""Deraining at the rain's scale: PSNR/SSIM (Y, matlab-y, rounded to 8 bits) and seconds per image for scale 1,
``auto`` and fixed working scales, on high-resolution versions of the test data.

Sets (``--sets``):
- ``rain100L-xK`` / ``rain100H-xK``: Rain100L/H pairs, rainy and clean both up-sampled K times (bicubic), so the
  streaks are K times wider than the models ever saw;
- ``bsds-xK``: the 8 BSDS500 photos that training holds out for validation (never the 91 Rain100 ground truths),
  up-sampled K times, with light synthetic rain drawn at that scale (``add_rain(..., scale=K)``: streaks K times
  longer and wider) at fixed seeds.

    python benchmarks/highres.py --sets rain100L-x4 --images 100 --scales 1 auto 2 3 4 6
    python benchmarks/highres.py --sets rain100L-x2 rain100L-x3 bsds-x3 bsds-x4 --images 20 --upsample guided bicubic
    python benchmarks/highres.py --photos real_rain_large --figure docs/highres_real.png   # real photos, timed
    python benchmarks/highres.py --large 4000x3000 --scales 1 auto                         # time and peak memory

``--json`` writes every number. Data come from the named sets (``$DERAIN_DATA`` as a local mirror, otherwise
downloaded on first use).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import torch
import torch.nn.functional as F

import derain
from derain.data import PairedFolder
from derain.data.sets import resolve_images
from derain.data.synthetic import add_rain, generator, load_textures
from derain.data.training import clean_files
from derain.inference.scale import derain_scaled, resolve_scale
from derain.io import list_images, read_image, write_image
from derain.metrics import measure


def _upsample(x: torch.Tensor, k: int) -> torch.Tensor:
    return F.interpolate(x, scale_factor=k, mode="bicubic", align_corners=False).clamp(0, 1)


def pairs_for(name: str, images: int) -> Iterator[tuple[str, torch.Tensor, torch.Tensor]]:
    """``(name, rainy, clean)`` of a set named ``rain100L-x4`` / ``bsds-x3``, made one at a time (a 4x Rain100 pair
    is 60 MB: holding a set would crowd the memory the forward needs and make it tile)."""
    base, k_text = name.rsplit("-x", 1)
    k = int(k_text)
    if base in ("rain100L", "rain100H"):
        folder = PairedFolder(base)
        step = max(1, len(folder) // images)
        for i in list(range(0, len(folder), step))[:images]:
            p = folder[i]
            yield p.name, _upsample(p.rainy[None], k), _upsample(p.clean[None], k)
    elif base == "bsds":
        root, never = resolve_images("bsds500")
        files = clean_files(root, drop=never)[:min(images, 8)]  # training holds these 8 out for validation
        textures = load_textures(resolve_images("rain_streaks")[0])
        for i, path in enumerate(files):
            clean = _upsample(read_image(path).image, k)
            rainy, _ = add_rain(clean[0], style="light", g=generator("highres", k, i), textures=textures, scale=k)
            yield path.name, rainy[None], clean
    else:
        raise SystemExit(f"unknown set {name!r}: use rain100L-xK, rain100H-xK or bsds-xK")


def run_set(restorer: derain.Restorer, name: str, images: int, scales: list[str], upsamples: list[str],
            verbose: bool = False) -> dict:
    runs = [(scale, how) for scale in scales for how in (upsamples if scale != "1" else ["-"])]
    keys = ["input"] + [f"scale {scale}" + (f" ({how})" if how != "-" else "") for scale, how in runs]
    got: dict[str, dict[str, list]] = {key: {"psnr": [], "ssim": [], "seconds": [], "scales": []} for key in keys}
    size: list[int] = []
    for count, (image, rainy, clean) in enumerate(pairs_for(name, images), start=1):
        size = list(rainy.shape[-2:])
        outputs = [("input", rainy, 0.0, 1)]
        for key, (scale, how) in zip(keys[1:], runs, strict=True):
            t0 = time.perf_counter()
            s = resolve_scale(scale if scale == "auto" else int(scale), rainy)
            out = derain_scaled(lambda t: restorer(t, scale=1), rainy, s, upsample=how if how != "-" else "guided")
            outputs.append((key, out, time.perf_counter() - t0, s))
        for key, out, seconds, s in outputs:
            p, q = measure(out, clean, protocol="matlab-y", quantize="round")
            for field, value in (("psnr", float(p)), ("ssim", float(q)), ("seconds", seconds), ("scales", s)):
                got[key][field].append(value)
        if verbose:
            cells = "  ".join(f"{key}: {got[key]['psnr'][-1]:.2f} dB {got[key]['seconds'][-1]:.1f} s" for key in keys)
            print(f"    {count:3d} {image}  {cells}", file=sys.stderr, flush=True)
    rows: dict[str, dict] = {}
    for key in keys:
        g = got[key]
        rows[key] = {"psnr": statistics.mean(g["psnr"]), "ssim": statistics.mean(g["ssim"]),
                     "seconds": statistics.median(g["seconds"]), "scales": sorted(set(g["scales"]))}
        if key != "input":
            rows[key]["better_than_input"] = sum(a > b for a, b in zip(g["psnr"], got["input"]["psnr"], strict=True))
        print(f"  {key:<22} {rows[key]['psnr']:7.2f} dB {rows[key]['ssim']:.4f}  {rows[key]['seconds']:6.2f} s"
              f"  (scale {rows[key]['scales']})", flush=True)
    return {"images": len(got["input"]["psnr"]), "size": size, "rows": rows}


def photos(restorer: derain.Restorer, set_name: str, figure: Path | None) -> dict:
    folder, _ = resolve_images(set_name)
    files = list_images(folder)
    result, tiles = {}, []
    for path in files:
        x = read_image(path).image
        t0 = time.perf_counter()
        s = resolve_scale("auto", x)
        out = restorer(x, scale="auto")
        seconds = time.perf_counter() - t0
        result[path.name] = {"size": list(x.shape[-2:]), "scale": s, "seconds": seconds}
        print(f"  {path.name:<16} {x.shape[-1]}x{x.shape[-2]}  scale {s}  {seconds:6.2f} s", flush=True)
        if figure is not None:
            tiles.append(_crop_pair(x, out))
    if figure is not None:
        write_image(figure, torch.cat(tiles, dim=2), overwrite=True)
    return result


def _crop_pair(x: torch.Tensor, out: torch.Tensor, side: int = 360) -> torch.Tensor:
    """The central ``side``-pixel square of input and output, side by side (full resolution: no resampling)."""
    h, w = x.shape[-2:]
    side = min(side, h, w // 2)
    top, left = (h - side) // 2, (w - side) // 2
    crop = (..., slice(top, top + side), slice(left, left + side))
    gap = torch.ones(1, 3, side, 6)
    return torch.cat([x[crop], gap, out[crop], gap], dim=3)


def large(weights: str, size: str, scale: str) -> dict:
    """Time and peak memory of one ``size`` image (random content) through ``derain run``'s code path."""
    code = (f"import resource,time,torch,derain; r=derain.load({weights!r}, device='cpu'); w,h=map(int,{size!r}."
            f"split('x')); x=torch.rand(1,3,h,w); t=time.perf_counter(); "
            f"r(x, scale={scale if scale == 'auto' else int(scale)!r}); "
            "print(time.perf_counter()-t, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss/2**20)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    return {"seconds": float(out[0]), "peak_rss_gib": float(out[1])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", default=derain.DEFAULT_WEIGHTS)
    parser.add_argument("--sets", nargs="*", default=[])
    parser.add_argument("--images", type=int, default=20, help="pairs per set (spread over the set)")
    parser.add_argument("--scales", nargs="*", default=["1", "auto", "2", "3", "4"])
    parser.add_argument("--upsample", nargs="*", default=["guided"], choices=["guided", "bicubic"])
    parser.add_argument("--photos", default=None, help="a set of real photos (real_rain_large): scale and time")
    parser.add_argument("--figure", type=Path, default=None, help="with --photos: crops before/after, one row each")
    parser.add_argument("--large", default=None, help="WxH: time and peak memory per scale")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--verbose", action="store_true", help="a line per image on stderr (long runs)")
    args = parser.parse_args()

    restorer = derain.load(args.weights, device="cpu")
    print(f"{args.weights}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    results: dict = {"weights": args.weights}
    for name in args.sets:
        print(f"{name}:")
        results[name] = run_set(restorer, name, args.images, args.scales, args.upsample, args.verbose)
    if args.photos:
        print(f"{args.photos} (scale auto):")
        results[args.photos] = photos(restorer, args.photos, args.figure)
    if args.large:
        for scale in args.scales:
            r = large(args.weights, args.large, scale)
            results[f"large {args.large} scale {scale}"] = r
            print(f"{args.large} scale {scale}: {r['seconds']:.1f} s, peak RSS {r['peak_rss_gib']:.2f} GiB", flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
