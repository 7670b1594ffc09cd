"""How fast this CPU runs the convolution that dominates PRN, PReNet and SIAN training (32 -> 32 channels, 3x3).

Prints the arithmetic rate (GFLOP/s, 2 flops per multiply-add) of its forward pass and of its backward pass (input
and weight gradients: twice the forward's multiply-adds), in NCHW and channels_last, at the recipes' batch and crop.
A training step that spends most of its time here can only get as much faster as these rates allow.

    python benchmarks/conv_rate.py                       # batch 18 x 100x100 (prenet recipes), torch's threads
    python benchmarks/conv_rate.py --batch 8 --crop 64 --threads 1
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=18)
    parser.add_argument("--crop", type=int, default=100)
    parser.add_argument("--channels", type=int, default=32)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    c, n, s = args.channels, args.batch, args.crop
    macs = n * s * s * c * c * 9  # forward multiply-adds (padding 1 keeps the size)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, conv {c}->{c} 3x3 on {n} x {s}x{s}, "
          f"median of {args.runs}; forward {2 * macs / 1e9:.2f} GFLOP")
    torch.manual_seed(0)
    times: dict[tuple[str, str], list[float]] = {}
    for _ in range(args.runs + 1):
        for fmt, memory_format in (("NCHW", torch.contiguous_format), ("channels_last", torch.channels_last)):
            conv = torch.nn.Conv2d(c, c, 3, padding=1).to(memory_format=memory_format)
            x = torch.rand(n, c, s, s).contiguous(memory_format=memory_format).requires_grad_()
            t0 = time.perf_counter()
            y = conv(x)
            t1 = time.perf_counter()
            y.backward(torch.ones_like(y))
            t2 = time.perf_counter()
            times.setdefault((fmt, "forward"), []).append(t1 - t0)
            times.setdefault((fmt, "backward"), []).append(t2 - t1)
    print(f"{'layout':<14} {'pass':<9} {'ms':>8} {'GFLOP/s':>8}")
    for (fmt, what), ts in times.items():
        median = statistics.median(ts[1:])  # the first round warms up
        flops = 2 * macs * (2 if what == "backward" else 1)
        print(f"{fmt:<14} {what:<9} {median * 1e3:>8.1f} {flops / median / 1e9:>8.1f}")


if __name__ == "__main__":
    main()
