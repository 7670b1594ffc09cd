"""Train several recipes side by side within a fixed wall-clock budget (a borrowed GPU for ten minutes, say).

    python scripts/train_in_budget.py 540 --out gpu_out \\
        --variant light=configs/jdnet_light.yaml \\
        --variant heavy=configs/jdnet_heavy.yaml \\
        --variant mixed=configs/jdnet_light.yaml,data.style=mixed,data.flips=true --snapshot mixed

A fixed step count either wastes the budget or stops before the learning-rate steps (the schedule's milestones are
fractions of ``train.steps``). So: every variant first runs ``--probe`` steps at once (as they will share the
machine); the slowest one's seconds per step, measured after its first 20 steps, sets one step count S that fits
the rest of the budget (capped by ``--cap``, rounded down to hundreds); then every variant trains S steps with its
recipe's schedule. A ``--snapshot`` variant stops at S/2, is saved and resumes. Every run also stops cleanly
(``--time-limit``) before the budget ends, in which case its last checkpoint is what is saved.

Written to ``--out``: ``<variant>.safetensors`` (and ``<variant>_half.safetensors``) in float16 (``derain convert
--float16``: a JDNet is 9.4 MB instead of 19), and ``logs.tar.gz`` (each run's config.yaml, log.csv,
summary.json and output). Runs live in ``--runs`` (default a temporary folder). Data sets are found as
``derain train`` finds them (the local mirror ``DERAIN_DATA``, the cache).
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    t0 = time.time()
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("budget", type=float, help="seconds for everything, from start to the last file written")
    ap.add_argument("--variant", action="append", required=True, metavar="NAME=CONFIG[,KEY=VALUE...]",
                    help="a run: its name, its recipe and dotted overrides (repeat for several)")
    ap.add_argument("--snapshot", nargs="*", default=[], metavar="NAME", help="variants also saved at half way")
    ap.add_argument("--out", type=Path, default=Path(os.environ.get("OUT") or "budget_out"))
    ap.add_argument("--runs", type=Path, default=None, help="run folders (default: a new temporary folder)")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--workers", type=int, default=3, help="data workers per run")
    ap.add_argument("--probe", type=int, default=60, help="steps of the speed probe (at least 30)")
    ap.add_argument("--cap", type=int, default=16667, help="at most this many steps")
    ap.add_argument("--margin", type=float, default=75.0, help="seconds kept for start-ups, restarts and saving")
    args = ap.parse_args()
    deadline = t0 + args.budget
    variants: dict[str, tuple[str, list[str]]] = {}
    for text in args.variant:
        name, _, rest = text.partition("=")
        config, *overrides = rest.split(",")
        if not name or not config or (not (ROOT / config).is_file() and not Path(config).is_file()):
            ap.error(f"--variant {text!r}: expected NAME=CONFIG[,KEY=VALUE...] with an existing config file")
        variants[name] = (config, overrides)
    runs = args.runs or Path(tempfile.mkdtemp(prefix="budget_runs_"))
    (runs / "logs").mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]),
               PYTHONUNBUFFERED="1")

    def say(text: str) -> None:
        print(f"[{time.time() - t0:6.1f}s] {text}", flush=True)

    def train(name: str, out: Path, sets: list[str], *, resume: bool = False, stop_after: int | None = None,
              time_limit: float | None = None) -> subprocess.Popen[bytes]:
        config, overrides = variants[name]
        start = ["--resume", str(out)] if resume else [config, "-o", str(out)]
        cmd = [sys.executable, "-m", "derain", "train", *start]
        for s in [f"train.device={args.device}", f"data.workers={args.workers}", "train.threads=1",
                  *([] if resume else overrides + sets)]:
            cmd += ["--set", s]
        if stop_after:
            cmd += ["--stop-after", str(stop_after)]
        if time_limit is not None:
            cmd += ["--time-limit", str(max(5, int(time_limit)))]
        log = (runs / "logs" / f"{out.name}.log").open("a")
        log.write(" ".join(cmd) + "\n")
        log.flush()
        return subprocess.Popen([*cmd, "--quiet"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)

    def rows(run: Path) -> list[dict[str, str]]:
        path = run / "log.csv"
        return list(csv.DictReader(path.open())) if path.exists() else []

    def save(run: Path, dest: Path) -> None:
        src = run / "weights.safetensors"
        src = src if src.exists() else run / "checkpoint.pt"
        r = subprocess.run([sys.executable, "-m", "derain", "convert", str(src), "-o", str(dest), "--float16",
                            "--overwrite"], cwd=ROOT, env=env, capture_output=True, text=True)
        say(f"{src} -> {dest}: {'saved' if r.returncode == 0 else 'FAILED ' + r.stderr.strip()[-300:]}")

    try:
        probes = {n: train(n, runs / f"probe_{n}", [f"train.steps={args.probe}", "train.log_every=10",
                                                    "train.val_every=1000000", "train.ckpt_every=1000000"])
                  for n in variants}
        per_step = {}
        for n, p in probes.items():
            p.wait()
            seconds = {int(r["step"]): float(r["seconds"]) for r in rows(runs / f"probe_{n}") if r.get("seconds")}
            if p.returncode != 0 or args.probe not in seconds or 20 not in seconds:
                say(f"{n}: the probe failed, left out; its output:\n"
                    + (runs / "logs" / f"probe_{n}.log").read_text()[-3000:])
                continue
            per_step[n] = (seconds[args.probe] - seconds[20]) / (args.probe - 20)
            say(f"{n}: {per_step[n] * 1000:.0f} ms per step (steps 20-{args.probe}, all variants at once)")
        if not per_step:
            raise SystemExit("every probe failed")
        steps = int(min(args.cap, (deadline - time.time() - args.margin) / max(per_step.values())))
        steps -= steps % 100 if steps >= 1000 else 0
        if steps < 10:
            say(f"the budget leaves time for {steps} steps; training 10 anyway")
            steps = 10
        say(f"{steps} steps per variant")
        sets = [f"train.steps={steps}", "train.log_every=50", f"train.val_every={max(steps // 8, 1)}",
                f"train.ckpt_every={max(steps // 4, 1)}"]
        pending = {n: train(n, runs / n, sets, stop_after=steps // 2 if n in args.snapshot else None,
                            time_limit=deadline - time.time() - args.margin / 2) for n in per_step}
        halved: set[str] = set()
        while pending:
            time.sleep(2)
            for n, p in list(pending.items()):
                if p.poll() is None:
                    continue
                del pending[n]
                done = rows(runs / n)
                say(f"{n}: stopped at step {done[-1]['step'] if done else '?'} (exit {p.returncode})")
                if p.returncode == 0 and n in args.snapshot and n not in halved and \
                        not (runs / n / "weights.safetensors").exists():
                    halved.add(n)
                    save(runs / n, args.out / f"{n}_half.safetensors")
                    pending[n] = train(n, runs / n, [], resume=True, time_limit=deadline - time.time() - 30)
        for n in per_step:
            save(runs / n, args.out / f"{n}.safetensors")
            val = [(r["step"], r["val_psnr"]) for r in rows(runs / n) if r.get("val_psnr")]
            say(f"{n}: validation PSNR by step {val}")
    finally:
        with tarfile.open(args.out / "logs.tar.gz", "w:gz") as tar:
            for path in sorted(runs.rglob("*")):
                if path.is_file() and path.suffix in (".csv", ".yaml", ".json", ".log"):
                    tar.add(path, arcname=str(path.relative_to(runs)))
        say(f"done: {args.out}")


if __name__ == "__main__":
    main()
