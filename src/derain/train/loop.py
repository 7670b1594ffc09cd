"""``fit()``: the one training loop, with checkpoint/resume, validation, logging and DDP.

A run folder holds ``config.yaml`` (the resolved config), ``log.csv`` (and TensorBoard events when
``tensorboard`` is installed), ``checkpoint.pt`` (model, optimizer, scheduler, scaler, step and RNG states) and,
when the run ends, ``weights.safetensors`` (loadable by ``derain.load``) and ``summary.json``.

Resuming continues exactly: data samples are keyed by their global position in the run
(:class:`derain.data.training.StepBatchSampler`), so a run stopped at any checkpoint and resumed ends with the
same weights, bit for bit on the CPU, as one that never stopped.
"""

from __future__ import annotations

import csv
import json
import math
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from derain.archs import create_model, get_entry
from derain.data import PairedFolder
from derain.data.sets import resolve_images
from derain.data.synthetic import load_textures
from derain.data.training import (
    PairedCrops,
    StepBatchSampler,
    SyntheticRain,
    center_crop,
    clean_files,
    synthetic_validation,
)
from derain.errors import InputError
from derain.inference.restorer import resolve_device
from derain.io.atomic import atomic_write
from derain.losses import get_loss
from derain.metrics import psnr, ssim
from derain.train import distributed
from derain.train.config import Config, config_from_dict, resolve_path, save_config, to_dict
from derain.weights.store import load_weights, write_weights

CHECKPOINT = "checkpoint.pt"
WEIGHTS = "weights.safetensors"
LOG_FIELDS = ("step", "loss", "lr", "seconds", "samples_per_s", "val_psnr", "val_ssim")
RUNTIME_KEYS = {"data.workers", "train.threads", "train.device", "train.amp", "train.log_every",
                "train.val_every", "train.ckpt_every"}  # may differ when resuming


@dataclass(frozen=True)
class FitResult:
    out: Path
    step: int
    finished: bool
    seconds: float
    val_psnr: float | None
    val_ssim: float | None
    model: nn.Module
    main: bool = True       # False in every torchrun process but rank 0


def init_weights(model: nn.Module, kind: str) -> None:
    """``normal``: convolution weights ~ N(0, 0.02) and zero biases (pix2pix ``init_weights``, SIAN)."""
    if kind == "default":
        return
    for m in model.modules():
        if isinstance(m, nn.Conv2d | nn.ConvTranspose2d | nn.Linear):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def warm_start(model: nn.Module, weights: str, name: str) -> None:
    """Load ``weights`` (a catalog name or a file; ``NAME:light`` / ``NAME:heavy`` for one network of a pair such
    as derain.default) into ``model`` strictly; they must be weights of ``name``."""
    source, _, part = weights.rpartition(":") if weights.endswith((":light", ":heavy")) else (weights, "", "")
    loaded = load_weights(source)
    built = loaded.build()
    kind = loaded.model
    if part:
        if not hasattr(built, part):
            raise InputError(f"model.weights={weights!r}: {loaded.model!r} weights have no {part!r} network")
        built, kind = getattr(built, part), "prn"
    if kind != name:
        raise InputError(f"model.weights={weights!r} holds {kind!r} weights, not {name!r}")
    model.load_state_dict(built.state_dict())


def _datasets(cfg: Config, seed: int) -> tuple[Dataset, list[tuple[Tensor, Tensor]]]:
    d = cfg.data
    if d.kind == "synthetic":
        root, never = resolve_images(resolve_path(d.root))  # a data set by name leaves out its own exclusions
        files = clean_files(root, exclude=resolve_path(d.exclude) if d.exclude else None, drop=never)
        if len(files) <= d.val_count:
            raise InputError(f"{d.root}: {len(files)} clean images, not enough to hold out data.val_count="
                             f"{d.val_count} for validation and train on the rest")
        textures = load_textures(resolve_images(resolve_path(d.textures))[0]) if d.textures else []
        val = synthetic_validation(files[:d.val_count], style=d.style, size=d.val_size, seed=seed,
                                   textures=textures)
        train = SyntheticRain(files[d.val_count:], style=d.style, crop=d.crop, flips=d.flips, seed=seed,
                              textures=textures)
        return train, val
    pairs = PairedFolder(resolve_path(d.root), layout=d.layout)
    held = min(d.val_count, len(pairs) - 1)
    val = [(center_crop(pairs[i].rainy, d.val_size), center_crop(pairs[i].clean, d.val_size)) for i in range(held)]
    train = PairedCrops(pairs, crop=d.crop, flips=d.flips, seed=seed, indices=range(held, len(pairs)))
    return train, val


@torch.no_grad()
def validate(model: nn.Module, pairs: list[tuple[Tensor, Tensor]], device: torch.device) -> tuple[float, float]:
    """Mean PSNR/SSIM on the Y channel (MATLAB luma, 'valid' SSIM) of the clamped outputs."""
    if not pairs:
        return math.nan, math.nan
    was_training = model.training
    model.eval()
    ps, ss = [], []
    for rainy, clean in pairs:
        out = model(rainy[None].to(device)).image.float().clamp(0, 1)
        target = clean[None].to(device)
        ps.append(float(psnr(out, target, data_range=1.0, y_channel=True)))
        ss.append(float(ssim(out, target, data_range=1.0, y_channel=True)))
    model.train(was_training)
    return sum(ps) / len(ps), sum(ss) / len(ss)


def _rng_state() -> dict[str, Any]:
    """Every RNG state as tensors, lists and numbers, so checkpoints load with ``weights_only=True``."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss = random.getstate()
    state: dict[str, Any] = {"torch": torch.get_rng_state(),
                             "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached],
                             "python": [version, list(internal), gauss]}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _check_resumable(saved: dict[str, Any], wanted: dict[str, Any], prefix: str = "") -> list[str]:
    diffs = []
    for key in sorted(set(saved) | set(wanted)):
        path = f"{prefix}{key}"
        a, b = saved.get(key), wanted.get(key)
        if isinstance(a, dict) and isinstance(b, dict) and path not in ("model.options",):
            diffs += _check_resumable(a, b, path + ".")
        elif a != b and path not in RUNTIME_KEYS:
            diffs.append(f"{path}: {a!r} -> {b!r}")
    return diffs


def _read_checkpoint(path: Path) -> dict[str, Any]:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a truncated or foreign file can fail anywhere in the unpickler
        raise InputError(f"{path}: not a readable derain training checkpoint ({str(exc).splitlines()[0][:160]})")\
            from None


class _Progress:
    """A tqdm bar of the steps on a terminal (loss, speed, last validation), or a line every ``log_every`` steps
    otherwise (logs of background runs)."""

    def __init__(self, total: int, start: int, enabled: bool) -> None:
        self.total, self.enabled = total, enabled
        self.bar: Any = None
        if enabled and sys.stderr.isatty():
            self.bar = tqdm(total=total, initial=start, desc="train", unit="step", file=sys.stderr,
                            dynamic_ncols=True)
        self.t0, self.start = time.perf_counter(), start

    def update(self, step: int, loss: float, rate: float, extra: str = "") -> None:
        if not self.enabled:
            return
        text = f"loss {loss:.4f} {rate:.1f} samples/s{extra}"
        if self.bar is not None:
            self.bar.set_postfix_str(text, refresh=False)
            self.bar.update(step - self.bar.n)
            return
        left = (self.total - step) * (time.perf_counter() - self.t0) / max(step - self.start, 1)
        sys.stderr.write(f"step {step}/{self.total} {text} ETA {int(left) // 60}:{int(left) % 60:02d}\n")
        sys.stderr.flush()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _tensorboard(out: Path) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except Exception:  # tensorboard is optional
        return None
    return SummaryWriter(str(out / "tensorboard"))


def fit(cfg: Config, out: str | Path, *, resume: bool = False, stop_after: int | None = None,
        time_limit: float | None = None, progress: bool = True) -> FitResult:
    """Train ``cfg.model`` into the run folder ``out``.

    resume: continue from ``out/checkpoint.pt`` (the saved config is used; only runtime keys such as
    ``data.workers`` may differ). stop_after / time_limit: stop cleanly (with a checkpoint) after that many steps
    in this call, or once that many seconds have passed, so long runs can go in resumable chunks.
    Under ``torchrun`` every process calls ``fit``; rank 0 writes the files.
    """
    out = Path(out)
    checkpoint_path = out / CHECKPOINT
    state: dict[str, Any] | None = None
    if resume:
        if not checkpoint_path.is_file():
            raise InputError(f"{out}: no {CHECKPOINT} to resume from; start the run without --resume")
        state = _read_checkpoint(checkpoint_path)
        diffs = _check_resumable(state["config"], to_dict(cfg))
        if diffs:
            raise InputError(f"{out}: the config differs from the run being resumed ({'; '.join(diffs)}); "
                             "resume with the run's own config (derain train --resume OUT)")
    elif checkpoint_path.exists() or (out / WEIGHTS).exists():
        raise InputError(f"{out}: already holds a training run; pass --resume to continue it, or choose a new "
                         "output folder")

    device = resolve_device(cfg.train.device)
    ctx = distributed.setup(device)
    device = ctx.device
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    seed = cfg.train.seed
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)

    entry = get_entry(cfg.model.name)
    model = create_model(cfg.model.name, **cfg.model.options)
    init_weights(model, cfg.model.init)
    if cfg.model.weights and state is None:
        warm_start(model, cfg.model.weights, cfg.model.name)
    model.to(device).train()
    loss_fn = get_loss(cfg.loss)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.optim.lr, betas=cfg.optim.betas,
                                 weight_decay=cfg.optim.weight_decay)
    milestones = sorted({max(1, round(f * cfg.train.steps)) for f in cfg.schedule.milestones})
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=milestones, gamma=cfg.schedule.gamma)
    use_amp = cfg.train.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)

    step, elapsed = 0, 0.0
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        step, elapsed = int(state["step"]), float(state.get("seconds", 0.0))
        _set_rng_state(state["rng"][ctx.rank] if ctx.rank < len(state["rng"]) else state["rng"][0])

    train_set, val_pairs = _datasets(cfg, seed)
    if ctx.main:
        out.mkdir(parents=True, exist_ok=True)
        save_config(cfg, out / "config.yaml")
    net: nn.Module = model
    if ctx.distributed:
        net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    sampler = StepBatchSampler(len(train_set), batch=cfg.data.batch, steps=cfg.train.steps, start=step,
                               seed=seed, rank=ctx.rank, world=ctx.world)
    loader = DataLoader(train_set, batch_sampler=sampler, num_workers=cfg.data.workers,
                        pin_memory=device.type == "cuda")

    log_path = out / "log.csv"
    writer = tb = None
    log_file = None
    if ctx.main:
        new_log = not log_path.exists() or state is None
        log_file = open(log_path, "w" if new_log else "a", newline="")  # noqa: SIM115 (closed in finally)
        writer = csv.DictWriter(log_file, fieldnames=LOG_FIELDS)
        if new_log:
            writer.writeheader()
        tb = _tensorboard(out)

    bar = _Progress(cfg.train.steps, step, progress and ctx.main)
    start_step, t0 = step, time.perf_counter()
    t_mark, step_mark = t0, step
    val_psnr = val_ssim = None
    finished = step >= cfg.train.steps

    def save_checkpoint() -> None:
        rng = [_rng_state()]
        if ctx.distributed:
            gathered: list[Any] = [None] * ctx.world
            torch.distributed.all_gather_object(gathered, rng[0])
            rng = gathered
        if ctx.main:
            payload = {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                       "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(), "step": step,
                       "seconds": elapsed + time.perf_counter() - t0, "rng": rng, "config": to_dict(cfg)}
            with atomic_write(checkpoint_path) as tmp:
                torch.save(payload, tmp)

    try:
        for keys_batch in loader:
            rainy, clean, mask = (t.to(device, non_blocking=True) for t in keys_batch)
            with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=use_amp):
                output = net(rainy)
                loss = loss_fn(output, clean, mask)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if cfg.optim.grad_clip:
                scaler.unscale_(optimizer)
                nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            step += 1
            finished = step >= cfg.train.steps
            stopping = finished or (stop_after is not None and step - start_step >= stop_after)
            if time_limit is not None and not stopping:  # every rank must agree, or DDP would hang
                stopping = distributed.any_true(ctx, time.perf_counter() - t0 >= time_limit)

            logged = step % cfg.train.log_every == 0 or stopping
            validated = step % cfg.train.val_every == 0 or finished
            row: dict[str, Any] = {}
            loss_value = float(loss.detach())
            if logged:
                loss_value = distributed.mean(ctx, loss_value)
                now = time.perf_counter()
                rate = (step - step_mark) * cfg.data.batch * ctx.world / max(now - t_mark, 1e-9)
                t_mark, step_mark = now, step
                row = {"step": step, "loss": f"{loss_value:.6f}", "lr": f"{scheduler.get_last_lr()[0]:.3g}",
                       "seconds": f"{elapsed + now - t0:.1f}", "samples_per_s": f"{rate:.2f}"}
            if validated and ctx.main:
                val_psnr, val_ssim = validate(model, val_pairs, device)
                row.update({"step": step, "val_psnr": f"{val_psnr:.4f}", "val_ssim": f"{val_ssim:.5f}"})
            if row and writer is not None and log_file is not None:
                writer.writerow(row)
                log_file.flush()
                if tb is not None:
                    for k in ("loss", "val_psnr", "val_ssim"):
                        if k in row:
                            tb.add_scalar(k, float(row[k]), step)
            if logged:
                extra = f" val {val_psnr:.2f} dB" if val_psnr is not None else ""
                bar.update(step, loss_value, float(row.get("samples_per_s", 0.0)), extra)
            if step % cfg.train.ckpt_every == 0 or stopping:
                save_checkpoint()
            if stopping:
                break
        seconds = elapsed + time.perf_counter() - t0
        if finished:
            spread = distributed.max_difference(ctx, model)
            if ctx.main:
                write_weights(out / WEIGHTS, model=cfg.model.name, options=dict(cfg.model.options),
                              state_dict=model.state_dict(),
                              extra={"steps": str(step), "config": json.dumps(to_dict(cfg), sort_keys=True)})
                summary = {"model": cfg.model.name, "family": entry.family, "steps": step, "seconds": seconds,
                           "processes": ctx.world, "device": str(device), "val_psnr": val_psnr,
                           "val_ssim": val_ssim, "ranks_max_parameter_difference": spread}
                (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        distributed.barrier(ctx)
    finally:
        bar.close()
        if log_file is not None:
            log_file.close()
        if tb is not None:
            tb.close()
        distributed.teardown(ctx)
    return FitResult(out, step, finished, seconds, val_psnr, val_ssim, model, ctx.main)


def load_run_config(out: str | Path) -> Config:
    """The resolved config saved in a run folder's checkpoint."""
    path = Path(out) / CHECKPOINT
    if not path.is_file():
        raise InputError(f"{out}: no {CHECKPOINT} to resume from")
    return config_from_dict(_read_checkpoint(path)["config"])
