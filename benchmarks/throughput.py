"""Megapixels per second per model: PyTorch whole-image, PyTorch tiled, ONNX Runtime; and the peak memory of a
very large image with automatic tiling.

    python benchmarks/throughput.py                        # every family, 480x320, CPU
    python benchmarks/throughput.py --onnx                 # + ONNX Runtime (exports each model first)
    python benchmarks/throughput.py --large 6000x4000      # peak RSS of derain.default on a 6000x4000 image

Each measurement runs in its own process so that peak memory is its own. Random weights (speed does not depend
on their values); the default model for --large.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FAMILIES = ("prn", "prenet", "sian", "spanet", "jdnet")


def _rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def _one(model: str, mode: str, height: int, width: int, runs: int) -> dict[str, float]:
    import torch

    import derain

    torch.manual_seed(0)
    if mode == "large":
        restorer = derain.load("derain.default", device="cpu")
    else:
        restorer = derain.Restorer(derain.create_model(model), name=model, device="cpu")
    x = torch.rand(1, 3, height, width)
    times = []
    if mode == "onnx":
        import onnxruntime as ort

        from derain.inference.export import export_onnx
        from derain.weights.store import LoadedWeights

        path = Path(tempfile.mkdtemp()) / f"{model}.onnx"
        loaded = LoadedWeights(model, {}, restorer.model.state_dict(), "rgb", "", "random")
        export_onnx(loaded, path)
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        feed = {"input": x.numpy()}
        session.run(None, feed)
        for _ in range(runs):
            t0 = time.perf_counter()
            session.run(None, feed)
            times.append(time.perf_counter() - t0)
    else:
        tile = {"whole": None, "tiled": 256, "large": None}[mode]
        if mode != "large":
            restorer(x[..., :64, :64])  # warm-up
        for _ in range(runs):
            t0 = time.perf_counter()
            restorer(x, tile=tile, scale=1)  # the model on the pixel grid (--scale: benchmarks/highres.py)
            times.append(time.perf_counter() - t0)
    median = statistics.median(times)
    return {"seconds": median, "mp_per_s": height * width / 1e6 / median, "peak_rss_gb": _rss_gb()}


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        model, mode, h, w, runs = sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
        print(json.dumps(_one(model, mode, h, w, runs)))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(FAMILIES))
    parser.add_argument("--size", default="480x320", help="WIDTHxHEIGHT")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--onnx", action="store_true", help="also time ONNX Runtime")
    parser.add_argument("--large", default=None, help="WIDTHxHEIGHT: peak memory of derain.default, auto tiling")
    args = parser.parse_args()

    def child(model: str, mode: str, w: int, h: int, runs: int) -> dict[str, float]:
        out = subprocess.run([sys.executable, __file__, "--child", model, mode, str(h), str(w), str(runs)],
                             capture_output=True, text=True, check=True)
        return json.loads(out.stdout.strip().splitlines()[-1])

    if args.large:
        w, h = (int(v) for v in args.large.split("x"))
        r = child("derain.default", "large", w, h, 1)
        print(f"derain.default {w}x{h}, automatic tiling: {r['seconds']:.0f} s, {r['mp_per_s']:.3f} MP/s, "
              f"peak RSS {r['peak_rss_gb']:.2f} GB")
        return
    w, h = (int(v) for v in args.size.split("x"))
    modes = ["whole", "tiled"] + (["onnx"] if args.onnx else [])
    print(f"{w}x{h}, median of {args.runs}; MP/s (peak RSS GB)")
    print(f"{'model':<10}" + "".join(f"{m:>22}" for m in modes))
    for model in args.models:
        cells = []
        for mode in modes:
            r = child(model, mode, w, h, args.runs)
            cells.append(f"{r['mp_per_s']:>14.4f} ({r['peak_rss_gb']:.2f})")
        print(f"{model:<10}" + "".join(f"{c:>22}" for c in cells))


if __name__ == "__main__":
    main()
