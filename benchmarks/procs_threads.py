"""Processes or threads for CPU training: ``derain train`` as 1 process × T threads against P processes × 1 thread.

Both runs do the same mathematics per optimizer step: the single process takes the recipe's batch, each of the
P ``torchrun`` processes a P-th of it (DDP averages the gradients, gloo on CPU). Each run trains ``--steps``
steps of the recipe through ``derain train`` (data workers included) into a temporary folder; the figure is the
mean time per step after the first (which includes starting the workers), from the run's ``log.csv``.

    python benchmarks/procs_threads.py                                  # default and jdnet_light, 2 cores
    python benchmarks/procs_threads.py --recipes prenet_heavy --steps 5 --json out.json
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _run(recipe: str, *, procs: int, threads: int, steps: int, folder: Path) -> dict[str, float]:
    from derain.train.config import load_config

    cfg = load_config(ROOT / "configs" / f"{recipe}.yaml")
    if cfg.data.batch % procs:
        raise SystemExit(f"{recipe}: batch {cfg.data.batch} does not split over {procs} processes")
    sets = ["--set", f"data.batch={cfg.data.batch // procs}", "--set", f"train.threads={threads}",
            "--set", "train.log_every=1", "--set", "data.workers=1",
            "--set", f"train.val_every={10 * steps}", "--set", f"train.ckpt_every={10 * steps}"]
    out = folder / f"{recipe}_{procs}x{threads}"
    train = ["-m", "derain", "train", str(ROOT / "configs" / f"{recipe}.yaml"), "-o", str(out), *sets,
             "--stop-after", str(steps), "--quiet"]
    if procs == 1:
        cmd = [sys.executable, *train]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={procs}", *train]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"{recipe} {procs}x{threads} failed:\n{proc.stderr[-2000:]}")
    with (out / "log.csv").open() as f:
        seconds = [float(r["seconds"]) for r in csv.DictReader(f) if r["seconds"]]
    step_s = (seconds[-1] - seconds[0]) / (len(seconds) - 1)  # the log's clock has 0.1 s steps: no median
    return {"step_s": step_s, "samples_per_s": cfg.data.batch / step_s, "batch": cfg.data.batch}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipes", nargs="*", default=["default", "jdnet_light"])
    parser.add_argument("--steps", type=int, default=6, help="steps per run (the first is not counted)")
    parser.add_argument("--cores", type=int, default=2, help="P processes × 1 thread against 1 × P threads")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    if args.steps < 3:
        parser.error("--steps must be at least 3 (the first step is not counted)")
    print(f"derain train, {args.steps} steps per run, mean s/step after the first; same global batch both ways")
    print(f"{'recipe':<14} {'batch':>5} {f'1 x {args.cores} threads':>16} {f'{args.cores} procs x 1':>14} "
          f"{'procs/threads':>14}")
    results = {}
    with tempfile.TemporaryDirectory(prefix="derain-pt-") as tmp:
        for recipe in args.recipes:
            threads = _run(recipe, procs=1, threads=args.cores, steps=args.steps, folder=Path(tmp))
            procs = _run(recipe, procs=args.cores, threads=1, steps=args.steps, folder=Path(tmp))
            ratio = threads["step_s"] / procs["step_s"]
            results[recipe] = {"threads": threads, "processes": procs, "speedup": ratio}
            print(f"{recipe:<14} {threads['batch']:>5} {threads['step_s']:>14.3f} s {procs['step_s']:>12.3f} s "
                  f"{ratio:>13.2f}×", flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
