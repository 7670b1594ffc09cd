"""One optimizer step per training recipe: seconds, samples/s and peak memory, data loading in and out.

For every recipe in ``configs/`` (or those named), in its own subprocess so that peak memory is its own:

- ``step``: forward + loss + backward + Adam on one fixed batch at the recipe's crop and batch size (data
  loading excluded), median of ``--runs`` steps after a warm-up step;
- ``data``: seconds to make one batch in the main process (reading, cropping, synthetic rain: the work the
  recipe's ``data.workers`` processes share);
- ``loop``: seconds per step through ``DataLoader`` with the recipe's workers, i.e. what ``derain train``
  sees (data loading included); when ``loop`` is close to ``step`` the workers keep the model busy.

    python benchmarks/train_step.py                        # every recipe, CPU
    python benchmarks/train_step.py --recipes default jdnet_light --runs 5 --json out.json
    python benchmarks/train_step.py --recipes prenet_heavy --runs 1 --no-loop --profile 8   # + where the time goes
    python benchmarks/train_step.py --recipes sian_light --no-loop --compile   # train.compile=true; step 1 compiles
    python benchmarks/train_step.py --recipes jdnet_light --no-loop --device cuda --amp --profile 8  # on a GPU
    python benchmarks/train_step.py --recipes jdnet_light --no-loop --runs 1 --attention windows --profile 5

``ops`` (with ``--profile``) counts the operators one step runs that do work (innermost calls only; views and
allocations left out): on a GPU each is at least one kernel launch, so a step of tens of thousands of small
operators is launch-bound there whatever the arithmetic. ``--attention`` forces JDNet's attention form (``windows``:
the banded k*k window loop, ``whole``: the whole-image form; default: whole on an accelerator, windows on the CPU).
``--amp`` runs the step as ``derain train`` does on CUDA (float16 autocast, the loss in float32, gradient scaling).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


# operators that only make views, allocate or bookkeep: not counted as work
_NOT_WORK = {"aten::as_strided", "aten::slice", "aten::select", "aten::view", "aten::reshape", "aten::_reshape_alias",
             "aten::expand", "aten::permute", "aten::unsqueeze", "aten::squeeze", "aten::t", "aten::transpose",
             "aten::alias", "aten::detach", "detach", "aten::detach_", "aten::empty", "aten::empty_strided",
             "aten::empty_like", "aten::resize_", "aten::as_strided_", "aten::unflatten", "aten::flatten",
             "aten::split", "aten::chunk", "aten::narrow", "aten::view_as", "aten::contiguous", "aten::to",
             "aten::lift_fresh", "aten::result_type", "aten::is_nonzero", "aten::item", "aten::_local_scalar_dense"}


def measure_one(recipe: str, *, runs: int, threads: int | None, loop: bool, profile: int = 0,
                channels_last: bool = False, compile: bool = False, device: str = "cpu", amp: bool = False,
                attention: str = "auto") -> dict[str, object]:
    import torch
    from torch.utils.data import DataLoader

    from derain.archs import create_model
    from derain.data.training import StepBatchSampler
    from derain.losses import get_loss
    from derain.nn.pairwise import PairwiseSelfAttention
    from derain.train.config import load_config
    from derain.train.datasets import build_datasets
    from derain.train.loop import optimizer_step
    from derain.train.model import init_weights

    if threads:
        torch.set_num_threads(threads)
    cfg = load_config(ROOT / "configs" / f"{recipe}.yaml")
    torch.manual_seed(0)
    model = create_model(cfg.model.name, **cfg.model.options)
    init_weights(model, cfg.model.init)
    model.train()
    for module in model.modules():
        if isinstance(module, PairwiseSelfAttention):
            module.whole_image_training = {"auto": None, "whole": True, "windows": False}[attention]
    dev = torch.device(device)
    amp = amp and dev.type == "cuda"
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True  # as derain train does
    layout = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(dev, memory_format=layout)
    if compile:
        from derain.train.model import compiled

        model = compiled(model, dev)  # what train.compile=true does
    loss_fn = get_loss(cfg.loss)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.optim.lr)
    scaler = torch.amp.GradScaler("cuda", enabled=amp)

    def sync() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
    train_set, _ = build_datasets(cfg, 0)

    def make_batch(step: int) -> list[torch.Tensor]:
        keys = [(k % len(train_set), step * cfg.data.batch + k) for k in range(cfg.data.batch)]
        samples = [train_set[key] for key in keys]
        return [torch.stack(t) for t in zip(*samples, strict=True)]

    data_times = []
    for i in range(max(2, runs // 2)):
        t0 = time.perf_counter()
        batch = make_batch(i)
        data_times.append(time.perf_counter() - t0)
    rainy, clean, mask = batch  # one_step moves them to the device, as it does the DataLoader's batches

    def one_step(rainy: torch.Tensor, clean: torch.Tensor, mask: torch.Tensor) -> float:
        rainy, clean, mask = (t.to(dev) for t in (rainy, clean, mask))
        loss = optimizer_step(model, rainy.contiguous(memory_format=layout), clean, mask, loss_fn=loss_fn,
                              optimizer=opt, scaler=scaler, amp=amp)  # derain train's step
        return float(loss)  # waits for the step on an accelerator

    t0 = time.perf_counter()
    one_step(rainy, clean, mask)  # warm-up (with --compile: the compilation)
    warmup_s = time.perf_counter() - t0
    step_times = []
    for _ in range(runs):
        sync()
        t0 = time.perf_counter()
        one_step(rainy, clean, mask)
        step_times.append(time.perf_counter() - t0)
    result: dict[str, object] = {"batch": cfg.data.batch, "crop": cfg.data.crop, "workers": cfg.data.workers,
              "step_s": statistics.median(step_times), "step_min_s": min(step_times),
              "data_s": statistics.median(data_times), "warmup_s": warmup_s, "device": str(dev), "amp": amp}
    if dev.type == "cuda":
        result["peak_gpu_mib"] = torch.cuda.max_memory_allocated(dev) / 2**20
    if profile:
        from torch.profiler import profile as profiler

        with profiler() as prof:
            one_step(rainy, clean, mask)
        events = prof.key_averages()
        result["ops"] = sum(1 for e in prof.events() if e.name.startswith("aten::") and e.name not in _NOT_WORK
                            and not any(c.name.startswith("aten::") for c in e.cpu_children))  # leaves only
        total = sum(e.self_cpu_time_total for e in events)
        top = sorted(events, key=lambda e: -e.self_cpu_time_total)[:profile]
        result["profile"] = [{"op": e.key, "share": e.self_cpu_time_total / total, "calls": e.count} for e in top]
    if loop:
        sampler = StepBatchSampler(len(train_set), batch=cfg.data.batch, steps=runs + 1, seed=0)
        loader = DataLoader(train_set, batch_sampler=sampler, num_workers=cfg.data.workers)
        times, t0 = [], time.perf_counter()
        for i, (r, c, m) in enumerate(loader):
            one_step(r, c, m)
            now = time.perf_counter()
            if i:  # the first step includes starting the workers
                times.append(now - t0)
            t0 = now
        result["loop_s"] = statistics.median(times)
    result["peak_rss_mib"] = _peak_rss_mib()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipes", nargs="*", default=None, help="config names (default: all in configs/)")
    parser.add_argument("--runs", type=int, default=3, help="timed steps per recipe (median)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--no-loop", action="store_true", help="skip the DataLoader measurement")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    parser.add_argument("--profile", type=int, default=0, metavar="N",
                        help="also profile one step and print its N most expensive operators (self CPU time)")
    parser.add_argument("--channels-last", action="store_true",
                        help="model and batches in channels_last (the training loop itself uses NCHW)")
    parser.add_argument("--compile", action="store_true",
                        help="torch.compile the model (needs a C++ compiler; the first step includes compiling)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1 ... (default: cpu)")
    parser.add_argument("--amp", action="store_true", help="float16 autocast as derain train on CUDA (CUDA only)")
    parser.add_argument("--attention", choices=("auto", "windows", "whole"), default="auto",
                        help="JDNet's attention form in training (default: whole on an accelerator, else windows)")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure_one(args.one, runs=args.runs, threads=args.threads, loop=not args.no_loop,
                                     profile=args.profile, channels_last=args.channels_last,
                                     compile=args.compile, device=args.device, amp=args.amp,
                                     attention=args.attention)))
        return

    import torch

    recipes = args.recipes or sorted(p.stem for p in (ROOT / "configs").glob("*.yaml"))
    print(f"torch {torch.__version__}, {args.device}{' (amp)' if args.amp else ''}, "
          f"{args.threads or torch.get_num_threads()} CPU threads, median of {args.runs} "
          f"{'(channels_last) ' if args.channels_last else ''}"
          "steps; step = forward+backward+Adam on a fixed batch, data = one batch made in-process, "
          "loop = a step through DataLoader with the recipe's workers")
    print(f"{'recipe':<14} {'batch':>5} {'crop':>5} {'step s':>8} {'samples/s':>10} {'data s':>8} "
          f"{'loop s':>8} {'peak RSS MiB':>13} {'first step s':>13}")
    results = {}
    for name in recipes:
        cmd = [sys.executable, __file__, "--one", name, "--runs", str(args.runs)]
        if args.threads:
            cmd += ["--threads", str(args.threads)]
        if args.no_loop:
            cmd.append("--no-loop")
        if args.profile:
            cmd += ["--profile", str(args.profile)]
        if args.channels_last:
            cmd.append("--channels-last")
        if args.compile:
            cmd.append("--compile")
        cmd += ["--device", args.device, "--attention", args.attention] + (["--amp"] if args.amp else [])
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            print(f"{name:<14} failed: {proc.stderr.strip().splitlines()[-1:]}")
            continue
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        results[name] = r
        loop = f"{r['loop_s']:>8.3f}" if "loop_s" in r else f"{'-':>8}"
        print(f"{name:<14} {r['batch']:>5} {r['crop']:>5} {r['step_s']:>8.3f} {r['batch'] / r['step_s']:>10.2f} "
              f"{r['data_s']:>8.3f} {loop} {r['peak_rss_mib']:>13.0f} {r['warmup_s']:>13.1f}", flush=True)
    for name, r in results.items():
        if "profile" in r:
            print(f"\n{name}: {r['ops']} operators doing work in one step; share of its self CPU time (torch.profiler)")
            for row in r["profile"]:
                print(f"  {row['op']:<40} {row['share']:>6.1%} {row['calls']:>6} calls")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
