"""A GPU check ready to run the day a CUDA machine is lent: prints a Markdown report for the README.

1. the CUDA-only tests (``pytest -m "not slow" -k cuda``);
2. every recipe in ``configs/`` for ``--steps`` AMP steps at its own crop and batch: the loss must stay finite
   and fall (mean of the last quarter below the first quarter);
3. ``--half`` inference against float32 for every model: the largest difference in 8-bit levels;
4. throughput in MP/s at 1920x1080 for every model, float32 and float16.

    python benchmarks/gpu_check.py                  # on a CUDA machine: about 5-8 minutes
    python benchmarks/gpu_check.py --dry-run        # on the CPU: the same code paths, tiny sizes and 2 steps

Random weights throughout (speed and float16 error do not need trained ones); data comes from the named sets.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

import derain
from derain.archs import get_family
from derain.losses import get_loss
from derain.train.config import load_config

ROOT = Path(__file__).resolve().parent.parent

def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def cuda_tests(dry: bool) -> str:
    if dry:
        return "CUDA-only tests: skipped (dry run)"
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-m", "not slow", "-k", "cuda", "tests"],
                          capture_output=True, text=True, check=False, cwd=ROOT)
    last = (proc.stdout.strip().splitlines() or ["no output"])[-1]
    return f"CUDA-only tests: {last} (exit {proc.returncode})"


def amp_steps(name: str, device: torch.device, steps: int, dry: bool) -> str:
    from derain.train.datasets import build_datasets
    from derain.train.loop import optimizer_step
    from derain.train.model import init_weights

    overrides = ["data.crop=32", "data.batch=2", "data.val_count=1"] if dry else []
    cfg = load_config(ROOT / "configs" / f"{name}.yaml", overrides)
    if dry:
        cfg.model.options = {**get_family(cfg.model.name).small, **cfg.model.options}
    torch.manual_seed(0)
    model = derain.create_model(cfg.model.name, **cfg.model.options)
    init_weights(model, cfg.model.init)
    model.to(device).train()
    opt = torch.optim.Adam(model.parameters(), lr=cfg.optim.lr, betas=cfg.optim.betas)
    scaler = torch.amp.GradScaler("cuda", enabled=device.type == "cuda")
    loss_fn = get_loss(cfg.loss)
    train, _ = build_datasets(cfg, 0)
    losses, t0 = [], time.perf_counter()
    for step in range(steps):
        batch = [train[(i % len(train), step * cfg.data.batch + i)] for i in range(cfg.data.batch)]
        rainy, clean, mask = (torch.stack(t).to(device) for t in zip(*batch, strict=True))
        loss = optimizer_step(model, rainy, clean, mask, loss_fn=loss_fn, optimizer=opt, scaler=scaler,
                              amp=device.type == "cuda")  # derain train's step: float16 autocast, loss in float32
        losses.append(float(loss))
    _sync(device)
    seconds = (time.perf_counter() - t0) / steps
    q = max(1, steps // 4)
    first, last = statistics.mean(losses[:q]), statistics.mean(losses[-q:])
    finite = all(v == v and abs(v) != float("inf") for v in losses)
    verdict = "ok" if finite and (last < first or dry) else "FAIL"
    return f"| {name} | {steps} | {first:.4f} -> {last:.4f} | {seconds:.3f} | {verdict} |"


def half_vs_float(name: str, device: torch.device, size: tuple[int, int], dry: bool) -> str:
    torch.manual_seed(0)
    options = get_family(name).small if dry else {}
    model = derain.create_model(name, **options)
    x = torch.rand(1, 3, *size)
    full = derain.Restorer(model, name=name, device=device)(x, scale=1)
    if device.type != "cuda":
        return f"| {name} | (no float16 on the CPU) |"
    half = derain.Restorer(model, name=name, device=device, dtype=torch.float16)(x.half(), scale=1).float()
    return f"| {name} | {float((half - full).abs().max()) * 255:.2f} |"


def throughput(name: str, device: torch.device, size: tuple[int, int], dtype: torch.dtype, dry: bool) -> float:
    torch.manual_seed(0)
    options = get_family(name).small if dry else {}
    restorer = derain.Restorer(derain.create_model(name, **options), name=name, device=device, dtype=dtype)
    x = torch.rand(1, 3, *size, device=device, dtype=dtype)
    restorer(x, scale=1)
    runs = 1 if dry else 3
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(runs):
        restorer(x, scale=1)
    _sync(device)
    return size[0] * size[1] / 1e6 / ((time.perf_counter() - t0) / runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dry-run", action="store_true", help="CPU, tiny models and sizes, 2 steps")
    parser.add_argument("--steps", type=int, default=50)
    args = parser.parse_args()
    dry = args.dry_run
    if not dry and not torch.cuda.is_available():
        raise SystemExit("no CUDA GPU visible; run with --dry-run to check the script on the CPU")
    device = torch.device("cpu" if dry else "cuda")
    steps = 2 if dry else args.steps
    size = (48, 64) if dry else (1080, 1920)
    recipes = sorted(p.stem for p in (ROOT / "configs").glob("*.yaml"))
    models = derain.list_models()
    name = torch.cuda.get_device_name() if device.type == "cuda" else "CPU (dry run)"
    print(f"# GPU check: {name}, torch {torch.__version__}\n")
    print(cuda_tests(dry) + "\n")
    print("| recipe | AMP steps | loss first -> last quarter | s/step | |\n|---|---|---|---|---|")
    for recipe in recipes:
        print(amp_steps(recipe, device, steps, dry), flush=True)
    print("\n| model | --half vs float32, max difference (8-bit levels) |\n|---|---|")
    for model in models:
        print(half_vs_float(model, device, size, dry), flush=True)
    print(f"\n| model | MP/s float32 at {size[1]}x{size[0]} | MP/s float16 |\n|---|---|---|")
    for model in models:
        f32 = throughput(model, device, size, torch.float32, dry)
        f16 = throughput(model, device, size, torch.float16, dry) if device.type == "cuda" else float("nan")
        print(f"| {model} | {f32:.3f} | {f16:.3f} |", flush=True)


if __name__ == "__main__":
    main()
