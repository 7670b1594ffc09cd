"""Speed of SPANet's IRNN (one call = four sweeps): the reference loop against the chunked scan.

    PYTHONPATH=src python benchmarks/irnn.py                 # 480x320 and 1920x1080, CPU (and CUDA if present)
    PYTHONPATH=src python benchmarks/irnn.py --sizes 320x480 --repeats 9

Prints the median seconds of ``IRNN(x)`` for B=1, C=32, forward only (under ``torch.no_grad``) and forward +
backward (``out.sum().backward()`` through all four outputs), and the loop/scan ratio. Runs alternate between the
two methods so that load from other processes hits both alike.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from derain.nn.irnn import IRNN


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn: Callable[[], None], device: torch.device) -> float:
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - start


def _runner(module: IRNN, x: torch.Tensor, backward: bool) -> Callable[[], None]:
    def forward() -> None:
        with torch.no_grad():
            module(x)

    def forward_backward() -> None:
        xg = x.detach().requires_grad_()
        sum(o.sum() for o in module(xg)).backward()  # type: ignore[union-attr]

    return forward_backward if backward else forward


def bench(height: int, width: int, device: torch.device, repeats: int, backward: bool) -> dict[str, float]:
    torch.manual_seed(0)
    module = IRNN(channels=32).to(device)
    with torch.no_grad():  # learned-looking weights: both signs, |w| < 1
        for name in ("up_weight", "right_weight", "down_weight", "left_weight"):
            getattr(module, name).weight.uniform_(-0.5, 1.0)
    x = torch.randn(1, 32, height, width, device=device)
    times: dict[str, list[float]] = {"loop": [], "scan": []}
    for rep in range(repeats + 1):
        for method in ("loop", "scan"):
            module.method = method  # type: ignore[assignment]
            t = _timed(_runner(module, x, backward), device)
            if rep:  # the first round warms up
                times[method].append(t)
    return {m: statistics.median(ts) for m, ts in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", default=["320x480", "1080x1920"], help="HxW")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--devices", nargs="+", default=None, help="cpu, cuda (default: cpu, and cuda if present)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    devices = args.devices or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, B=1, C=32, median of {args.repeats}")
    print(f"{'device':6} {'size (HxW)':>11} {'pass':>8} {'loop s':>9} {'scan s':>9} {'loop/scan':>9}")
    for dev in devices:
        device = torch.device(dev)
        for size in args.sizes:
            height, width = (int(v) for v in size.lower().split("x"))
            for backward in (False, True):
                t = bench(height, width, device, args.repeats, backward)
                label = "fwd+bwd" if backward else "fwd"
                print(f"{dev:6} {size:>11} {label:>8} {t['loop']:9.4f} {t['scan']:9.4f} "
                      f"{t['loop'] / t['scan']:8.1f}x", flush=True)


if __name__ == "__main__":
    main()
