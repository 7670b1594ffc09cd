"""``fit()``: the one training loop, with checkpoint/resume, validation, logging and DDP.

A run folder holds ``config.yaml`` (the resolved config), ``log.csv`` (and TensorBoard events when
``tensorboard`` is installed), ``checkpoint.pt`` (model, optimizer, scheduler, scaler, step and RNG states),
``best.safetensors`` (the weights at the validation with the highest PSNR so far, loadable by ``derain.load``) and,
when the run ends, ``weights.safetensors`` (the last weights) and ``summary.json``.

Resuming continues exactly: data samples are keyed by their global position in the run
(:class:`derain.data.training.StepBatchSampler`), so a run stopped at any checkpoint and resumed ends with the
same weights, bit for bit on the CPU, as one that never stopped. Ctrl-C or SIGTERM (``kill``, a scheduler
taking the machine back) stops a run the same clean way: the step in progress ends, the checkpoint is written,
and ``fit`` returns; a second Ctrl-C interrupts at once.
"""

from __future__ import annotations

import csv
import json
import math
import random
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from derain.archs import create_model, get_family
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
from derain.losses import LossFn, get_loss
from derain.metrics import psnr, ssim
from derain.train import distributed
from derain.train.config import Config, config_from_dict, resolve_path, save_config, to_dict
from derain.types import DerainOutput
from derain.weights.store import load_weights, write_weights

CHECKPOINT = "checkpoint.pt"
WEIGHTS = "weights.safetensors"
BEST = "best.safetensors"
LOG_FIELDS = ("step", "loss", "lr", "seconds", "samples_per_s", "val_psnr", "val_ssim")
RUNTIME_KEYS = {"data.workers", "train.threads", "train.device", "train.amp", "train.compile", "train.log_every",
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
    signal: str | None = None  # "SIGINT" or "SIGTERM" when a signal stopped the run (cleanly, with a checkpoint)
    best: tuple[int, float] | None = None  # (step, validation PSNR) of best.safetensors, the best validation so far


class _StopOnSignal:
    """While training: the first SIGINT or SIGTERM asks the loop to stop after the step in progress (which then
    writes its checkpoint); a second one interrupts at once. Only the main thread can take signals; elsewhere
    (a notebook's worker thread) signals keep their usual meaning."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.received: str | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> _StopOnSignal:
        if threading.current_thread() is threading.main_thread():
            self._previous = {sig: signal.signal(sig, self._handle) for sig in self.SIGNALS}
        return self

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.received is not None:
            self._restore()
            raise KeyboardInterrupt
        self.received = signal.Signals(signum).name
        print(f"\n{self.received}: stopping after this step, with a checkpoint (again: stop at once, losing the "
              "steps since the last checkpoint)", file=sys.stderr, flush=True)

    def _restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}

    def __exit__(self, *exc: object) -> None:
        self._restore()


def _worker_ignores_stop_signals(worker_id: int) -> None:
    """A data worker leaves SIGINT and SIGTERM to the training process: Ctrl-C in a terminal and ``pkill -f``
    signal the whole process group, and a worker that died of it would crash the step in progress instead of
    letting :class:`_StopOnSignal` end it with a checkpoint. The training process still ends its workers (they
    also exit by themselves within seconds once it is gone; SIGKILL ends them at once)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


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


def _open_run(cfg: Config, out: Path, resume: bool) -> dict[str, Any] | None:
    """The checkpoint to resume from (``None``: a new run), after checking the folder and the config."""
    checkpoint_path = out / CHECKPOINT
    if not resume:
        if any((out / name).exists() for name in (CHECKPOINT, WEIGHTS, BEST)):
            raise InputError(f"{out}: already holds a training run; pass --resume to continue it, or choose a new "
                             "output folder")
        return None
    if not checkpoint_path.is_file():
        raise InputError(f"{out}: no {CHECKPOINT} to resume from; start the run without --resume")
    state = _read_checkpoint(checkpoint_path)
    diffs = _check_resumable(state["config"], to_dict(cfg))
    if diffs:
        raise InputError(f"{out}: the config differs from the run being resumed ({'; '.join(diffs)}); "
                         "resume with the run's own config (derain train --resume OUT)")
    return state


def _seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


def cxx_compiler() -> str | None:
    """The C++ compiler torch.compile would build CPU kernels with (the first on ``PATH``), or None."""
    import shutil

    return next((path for cc in ("c++", "g++", "clang++") if (path := shutil.which(cc))), None)


def compiled(net: nn.Module, device: torch.device) -> nn.Module:
    """``torch.compile(net)`` for ``train.compile: true``; a clear error where it cannot work.

    Opt-in: the mathematics are the same (gradients equal eager ones within float32 tolerance), the first step
    pays the compilation (minutes on 2 CPU cores), and it pays off only for some recipes (README, "Time per
    training step"). On CPU, torch's inductor builds C++: it needs a C++ compiler on ``PATH``.
    """
    if not hasattr(torch, "compile"):
        raise InputError("train.compile: this torch has no torch.compile; set train.compile=false")
    if device.type == "cpu" and cxx_compiler() is None:
        raise InputError("train.compile needs a C++ compiler on PATH (torch.compile builds C++ kernels on CPU): "
                         "install one (e.g. apt install g++) or set train.compile=false")
    return torch.compile(net, dynamic=False)  # training crops are one size; static shapes compile best


def full_precision(out: DerainOutput) -> DerainOutput:
    """The model's outputs in float32, for the loss. Under mixed precision the network runs in float16, but the
    loss must not: SSIM's variances are differences of near-equal terms (E[x^2] - mu^2), and float16 (11
    significant bits) rounds each term by up to 1.2e-4 at mid-grey, as much as the variance of a smooth patch
    and an eighth of SSIM's constant C2 (9e-4)."""
    return DerainOutput(out.image.float(), tuple(s.float() for s in out.stages),
                        tuple(a.float() for a in out.attention))


def optimizer_step(net: nn.Module, rainy: Tensor, clean: Tensor, mask: Tensor, *, loss_fn: LossFn,
                   optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler, amp: bool,
                   grad_clip: float | None = None) -> Tensor:
    """One optimizer step as ``derain train`` takes it, on a batch already on the model's device: the forward
    pass under float16 autocast when ``amp`` (CUDA), the loss in float32 (:func:`full_precision`), the backward
    pass through ``scaler`` (a no-op scaler when disabled), gradient-norm clipping when ``grad_clip``, the update.
    The lr schedule is the caller's. Returns the loss, detached (reading it waits for the step on a GPU).
    ``benchmarks/train_step.py`` and ``benchmarks/gpu_check.py`` time and check this same step."""
    with torch.autocast(device_type=rainy.device.type, dtype=torch.float16, enabled=amp):
        out = net(rainy)
    loss = loss_fn(full_precision(out), clean, mask)  # outside autocast: in float32
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    if grad_clip:
        scaler.unscale_(optimizer)
        nn.utils.clip_grad_norm_([p for group in optimizer.param_groups for p in group["params"]], grad_clip)
    scaler.step(optimizer)
    scaler.update()
    return loss.detach()


class _Trainer:
    """The model and what updates it: one :meth:`step` per batch, and the state a checkpoint holds."""

    def __init__(self, cfg: Config, ctx: distributed.Context, fresh: bool) -> None:
        self.cfg, self.ctx, self.device = cfg, ctx, ctx.device
        self.model = create_model(cfg.model.name, **cfg.model.options)
        init_weights(self.model, cfg.model.init)
        if cfg.model.weights and fresh:
            warm_start(self.model, cfg.model.weights, cfg.model.name)
        self.model.to(self.device).train()
        self.net: nn.Module = self.model
        if ctx.distributed:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.net = DistributedDataParallel(self.model, device_ids=ids)
        if cfg.train.compile:
            self.net = compiled(self.net, self.device)
        self.loss_fn = get_loss(cfg.loss)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=cfg.optim.lr, betas=cfg.optim.betas,
                                          weight_decay=cfg.optim.weight_decay)
        milestones = sorted({max(1, round(f * cfg.train.steps)) for f in cfg.schedule.milestones})
        self.scheduler = torch.optim.lr_scheduler.MultiStepLR(self.optimizer, milestones=milestones,
                                                              gamma=cfg.schedule.gamma)
        self.amp = cfg.train.amp and self.device.type == "cuda"
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # training crops are one size: let cuDNN pick its fastest kernels
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp)

    def restore(self, state: dict[str, Any]) -> tuple[int, float, tuple[int, float] | None]:
        """Load a checkpoint's states; returns ``(step, seconds trained so far, (step, PSNR) of the best validation
        so far)`` (the last is None for a checkpoint written before ``best.safetensors`` existed)."""
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        rank = self.ctx.rank
        _set_rng_state(state["rng"][rank] if rank < len(state["rng"]) else state["rng"][0])
        best = state.get("best_val")
        return int(state["step"]), float(state.get("seconds", 0.0)), None if best is None else (int(best[0]),
                                                                                                float(best[1]))

    def step(self, batch: tuple[Tensor, Tensor, Tensor]) -> Tensor:
        """One optimizer step on ``(rainy, clean, mask)``; returns the loss (detached)."""
        rainy, clean, mask = (t.to(self.device, non_blocking=True) for t in batch)
        loss = optimizer_step(self.net, rainy, clean, mask, loss_fn=self.loss_fn, optimizer=self.optimizer,
                              scaler=self.scaler, amp=self.amp, grad_clip=self.cfg.optim.grad_clip)
        self.scheduler.step()
        return loss

    def write_weights(self, path: Path, *, step: int, **extra: str) -> None:
        """The model's weights as a file ``derain.load`` reads (rank 0), with the step and the run's config."""
        if self.ctx.main:
            write_weights(path, model=self.cfg.model.name, options=dict(self.cfg.model.options),
                          state_dict=self.model.state_dict(),
                          extra={"steps": str(step), "config": json.dumps(to_dict(self.cfg), sort_keys=True), **extra})

    def save(self, path: Path, *, step: int, seconds: float, best_val: tuple[int, float] | None) -> None:
        """Write the checkpoint (rank 0), with every rank's RNG state (a collective call under DDP)."""
        rng = [_rng_state()]
        if self.ctx.distributed:
            gathered: list[Any] = [None] * self.ctx.world
            torch.distributed.all_gather_object(gathered, rng[0])
            rng = gathered
        if self.ctx.main:
            payload = {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                       "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(), "step": step,
                       "seconds": seconds, "rng": rng, "config": to_dict(self.cfg),
                       "best_val": None if best_val is None else list(best_val)}
            with atomic_write(path) as tmp:
                torch.save(payload, tmp)


def _drop_rows_after(path: Path, step: int) -> None:
    """Resuming at ``step``: a run that was killed hard had logged steps after its last checkpoint, which are
    about to run again; drop their rows so that the log holds each step once."""
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    kept = [r for r in rows if r.get("step", "").isdigit() and int(r["step"]) <= step]
    if len(kept) == len(rows):
        return
    with atomic_write(path) as tmp, tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=LOG_FIELDS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(kept)


class _RunLog:
    """``log.csv``, TensorBoard (when installed) and the progress display; only rank 0 writes."""

    def __init__(self, out: Path, *, total: int, step: int, append: bool, enabled: bool, progress: bool) -> None:
        self.file: Any = None
        self.writer: csv.DictWriter[str] | None = None
        self.tb: Any = None
        if enabled:
            path = out / "log.csv"
            append = append and path.exists()
            if append:
                _drop_rows_after(path, step)
            self.file = open(path, "a" if append else "w", newline="")  # noqa: SIM115 (closed in close())
            self.writer = csv.DictWriter(self.file, fieldnames=LOG_FIELDS)
            if not append:
                self.writer.writeheader()
            self.tb = _tensorboard(out)
        self.bar = _Progress(total, step, progress and enabled)

    def write(self, row: dict[str, Any]) -> None:
        if not row or self.writer is None:
            return
        self.writer.writerow(row)
        self.file.flush()
        if self.tb is not None:
            for key in ("loss", "val_psnr", "val_ssim"):
                if key in row:
                    self.tb.add_scalar(key, float(row[key]), int(row["step"]))

    def close(self) -> None:
        self.bar.close()
        if self.file is not None:
            self.file.close()
        if self.tb is not None:
            self.tb.close()


def _finish(cfg: Config, out: Path, trainer: _Trainer, *, step: int, seconds: float,
            val: tuple[float | None, float | None]) -> None:
    """The end of a run: the weights file and ``summary.json`` (rank 0), after checking the ranks agree."""
    spread = distributed.max_difference(trainer.ctx, trainer.model)
    if not trainer.ctx.main:
        return
    trainer.write_weights(out / WEIGHTS, step=step)
    summary = {"model": cfg.model.name, "family": get_family(cfg.model.name).name, "steps": step,
               "seconds": seconds, "processes": trainer.ctx.world, "device": str(trainer.device),
               "val_psnr": val[0], "val_ssim": val[1], "ranks_max_parameter_difference": spread}
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")


def fit(cfg: Config, out: str | Path, *, resume: bool = False, stop_after: int | None = None,
        time_limit: float | None = None, progress: bool = True) -> FitResult:
    """Train ``cfg.model`` into the run folder ``out``.

    resume: continue from ``out/checkpoint.pt`` (the saved config is used; only runtime keys such as
    ``data.workers`` may differ). stop_after / time_limit: stop cleanly (with a checkpoint) after that many steps
    in this call, or once that many seconds have passed, so long runs can go in resumable chunks.
    Under ``torchrun`` every process calls ``fit``; rank 0 writes the files.
    """
    out = Path(out)
    state = _open_run(cfg, out, resume)
    ctx = distributed.setup(resolve_device(cfg.train.device))
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    _seed_everything(cfg.train.seed)
    trainer = _Trainer(cfg, ctx, fresh=state is None)
    step, elapsed, best = trainer.restore(state) if state is not None else (0, 0.0, None)

    train_set, val_pairs = _datasets(cfg, cfg.train.seed)
    if ctx.main:
        out.mkdir(parents=True, exist_ok=True)
        save_config(cfg, out / "config.yaml")
    sampler = StepBatchSampler(len(train_set), batch=cfg.data.batch, steps=cfg.train.steps, start=step,
                               seed=cfg.train.seed, rank=ctx.rank, world=ctx.world)
    loader = DataLoader(train_set, batch_sampler=sampler, num_workers=cfg.data.workers,
                        pin_memory=ctx.device.type == "cuda",
                        worker_init_fn=_worker_ignores_stop_signals if cfg.data.workers else None)
    log = _RunLog(out, total=cfg.train.steps, step=step, append=state is not None, enabled=ctx.main,
                  progress=progress)

    start_step, t0 = step, time.perf_counter()
    t_mark, step_mark = t0, step
    val_psnr = val_ssim = None
    finished = step >= cfg.train.steps
    with _StopOnSignal() as stop:
        try:
            for batch in loader:
                loss = trainer.step(batch)
                step += 1
                finished = step >= cfg.train.steps
                stopping = finished or (stop_after is not None and step - start_step >= stop_after)
                if not stopping:  # every rank must agree, or DDP would hang
                    timed_out = time_limit is not None and time.perf_counter() - t0 >= time_limit
                    stopping = distributed.any_true(ctx, timed_out or stop.received is not None)

                row: dict[str, Any] = {}
                if step % cfg.train.log_every == 0 or stopping:
                    loss_value = distributed.mean(ctx, float(loss))
                    now = time.perf_counter()
                    rate = (step - step_mark) * cfg.data.batch * ctx.world / max(now - t_mark, 1e-9)
                    t_mark, step_mark = now, step
                    row = {"step": step, "loss": f"{loss_value:.6f}", "lr": f"{trainer.scheduler.get_last_lr()[0]:.3g}",
                           "seconds": f"{elapsed + now - t0:.1f}", "samples_per_s": f"{rate:.2f}"}
                if (step % cfg.train.val_every == 0 or finished) and ctx.main:
                    val_psnr, val_ssim = validate(trainer.model, val_pairs, ctx.device)
                    row.update({"step": step, "val_psnr": f"{val_psnr:.4f}", "val_ssim": f"{val_ssim:.5f}"})
                    if not math.isnan(val_psnr) and (best is None or val_psnr > best[1]):
                        best = (step, val_psnr)
                        trainer.write_weights(out / BEST, step=step, val_psnr=f"{val_psnr:.4f}",
                                              val_ssim=f"{val_ssim:.5f}")
                log.write(row)
                if "loss" in row:
                    extra = f" val {val_psnr:.2f} dB" if val_psnr is not None else ""
                    log.bar.update(step, float(row["loss"]), float(row["samples_per_s"]), extra)
                if step % cfg.train.ckpt_every == 0 or stopping:
                    trainer.save(out / CHECKPOINT, step=step, seconds=elapsed + time.perf_counter() - t0,
                                 best_val=best)
                if stopping:
                    break
            seconds = elapsed + time.perf_counter() - t0
            if finished:
                _finish(cfg, out, trainer, step=step, seconds=seconds, val=(val_psnr, val_ssim))
            distributed.barrier(ctx)
        finally:
            log.close()
            distributed.teardown(ctx)
    return FitResult(out, step, finished, seconds, val_psnr, val_ssim, trainer.model, ctx.main,
                     None if finished else stop.received, best)


def load_run_config(out: str | Path) -> Config:
    """The resolved config saved in a run folder's checkpoint."""
    path = Path(out) / CHECKPOINT
    if not path.is_file():
        raise InputError(f"{out}: no {CHECKPOINT} to resume from")
    return config_from_dict(_read_checkpoint(path)["config"])
