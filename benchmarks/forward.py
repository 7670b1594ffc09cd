"""Forward-pass speed and peak memory per model on this machine.

Prints, per registered model (random weights: timing does not depend on their values), the median seconds per
480x320 image over several runs and the peak resident memory of a fresh process running it. Each model runs in
its own subprocess so that peak memory is its own.

    python benchmarks/forward.py                 # every model, CPU
    python benchmarks/forward.py --models sian prenet --runs 7 --device cuda
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def measure_one(model_name: str, *, height: int, width: int, runs: int, device: str) -> dict[str, float]:
    import torch

    import derain

    torch.manual_seed(0)
    base = _peak_rss_mib()
    restorer = derain.Restorer(derain.create_model(model_name), name=model_name, device=device)
    x = torch.rand(1, 3, height, width)
    restorer.run(x)  # warm-up
    times = []
    for _ in range(runs):
        if restorer.device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        restorer.run(x)
        if restorer.device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    result = {"median_s": statistics.median(times), "min_s": min(times), "peak_rss_mib": _peak_rss_mib(),
              "rss_increase_mib": _peak_rss_mib() - base}
    if restorer.device.type == "cuda":
        result["cuda_peak_mib"] = torch.cuda.max_memory_allocated() / 2**20
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="*", default=None, help="registry names (default: all)")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--height", type=int, default=320)
    parser.add_argument("--width", type=int, default=480)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure_one(args.one, height=args.height, width=args.width, runs=args.runs,
                                     device=args.device)))
        return

    import torch

    import derain

    names = args.models or derain.list_models()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}, "
          f"{args.width}x{args.height}, median of {args.runs} runs")
    print(f"{'model':<14} {'s/image':>9} {'min s':>8} {'MPix/s':>8} {'peak RSS MiB':>13} {'model+run MiB':>14}")
    for name in names:
        cmd = [sys.executable, __file__, "--one", name, "--runs", str(args.runs), "--height", str(args.height),
               "--width", str(args.width), "--device", args.device]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            print(f"{name:<14} failed: {proc.stderr.strip().splitlines()[-1:]}")
            continue
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        mpix = args.height * args.width / 1e6 / r["median_s"]
        print(f"{name:<14} {r['median_s']:>9.3f} {r['min_s']:>8.3f} {mpix:>8.3f} {r['peak_rss_mib']:>13.0f} "
              f"{r['rss_increase_mib']:>14.0f}")


if __name__ == "__main__":
    main()
